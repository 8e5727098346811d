"""Refused logins go into the trail at a bounded rate: a login flood cannot fill the spool the view shares with
the application, and no refusal goes uncounted.

Two kinds of refusal can come without bound from unauthenticated clients: a login naming no configured user
(`unknown_user`, any number of names from any number of addresses) and an attempt the throttle answers unchecked
(`throttled`, as fast as a client can send). Each is an `auth.login_failed` event as long as the window's budget
lasts (`BUDGET` per `WINDOW_S`-second window, counted over both kinds); past it, the refusal is counted instead
into one `auth.login_failed_summary` event (actor `anonymous`, no address):

    count       refusals not recorded one by one      first_at / last_at  when the first and last came (UTC)
    addresses   distinct client addresses among them  addresses_capped    true when more than MAX_ADDRESSES
    reasons     {reason: count}                       method / window_s   the view's auth method, the window

A summary is written when the budget first runs out in a window (so the flood is on record at once), then when
the window is over (at the next login attempt or request that calls `flush_due`) and at shutdown; each counts the
refusals since the previous one. Memory is bounded by MAX_ADDRESSES per window. If the view is killed (SIGKILL)
during a flood, the count since the last summary is lost — never the fact that the budget ran out. A summary
that cannot be written keeps its counts for the next try, and the refusal is answered 503 like any unrecordable
access.

Failures that name a configured account (`bad_password`, `bad_token`, `bad_bearer_token`) are always recorded one
by one: the per-account throttle already bounds them (5 per account per 15 minutes), and who was targeted matters.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from auditlock.ui.access_log import LOGIN_FAILED, LOGIN_FAILED_SUMMARY, AccessLog, AccessNotRecorded

SUMMARIZED_REASONS = frozenset({"unknown_user", "throttled"})
WINDOW_S = 60
BUDGET = 60
MAX_ADDRESSES = 1024


@dataclass
class Tally:
    """Refusals counted instead of recorded, since the last summary."""

    count: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    addresses: set[str] = field(default_factory=set)
    addresses_capped: bool = False
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, now: float, ip: str | None, reason: str) -> None:
        """Count one refusal."""
        self.first_at = self.first_at or now
        self.last_at = now
        self.count += 1
        self.reasons[reason] += 1
        self.add_address(ip or "unknown")

    def merge(self, other: Tally) -> None:
        """Take back the counts of a summary that could not be written."""
        self.first_at = min(self.first_at or other.first_at, other.first_at)
        self.last_at = max(self.last_at, other.last_at)
        self.count += other.count
        self.reasons.update(other.reasons)
        for address in other.addresses:
            self.add_address(address)
        self.addresses_capped |= other.addresses_capped

    def add_address(self, address: str) -> None:
        """Remember one more address, within the bound."""
        if len(self.addresses) < MAX_ADDRESSES:
            self.addresses.add(address)
        elif address not in self.addresses:
            self.addresses_capped = True

    def payload(self, method: str, window_s: int) -> dict[str, Any]:
        """The summary event's payload."""
        return {"count": self.count, "first_at": _utc(self.first_at), "last_at": _utc(self.last_at),
                "addresses": len(self.addresses), "addresses_capped": self.addresses_capped,
                "reasons": dict(sorted(self.reasons.items())), "method": method, "window_s": window_s}


class RefusedLogins:
    """Records failed logins through the access log, summarizing the unbounded kinds past a budget per window."""

    def __init__(self, access: AccessLog, method: str, *, window_s: int = WINDOW_S, budget: int = BUDGET,
                 clock: Callable[[], float] = time.time) -> None:
        self.access = access
        self.method = method
        self.window_s = window_s
        self.budget = budget
        self.clock = clock
        self._lock = threading.Lock()
        self._window = -1  # the current window's number (time // window_s)
        self._recorded = 0  # refusals of the summarized kinds recorded one by one in this window
        self._overflowed = False  # whether the budget ran out in this window (its first overflow is on record)
        self._tally = Tally()

    def record(self, actor_id: str, ip: str | None, reason: str) -> None:
        """Record one failed login (one by one, or counted into a summary); raises `AccessNotRecorded`."""
        now = self.clock()
        self.flush_due()
        if reason in SUMMARIZED_REASONS and not self._take_budget(now):
            with self._lock:
                self._tally.add(now, ip, reason)
                first_overflow = not self._overflowed
            if first_overflow:  # until the overflow is on record, each refusal tries again (or is answered 503)
                self._write_summary()
                self._overflowed = True
            return
        self.access.record(LOGIN_FAILED, actor_id, ip, method=self.method, reason=reason)

    def flush_due(self) -> None:
        """Write the summary of a window that is over (raises `AccessNotRecorded` when it cannot be written)."""
        with self._lock:
            due = self._tally.count > 0 and self._tally.last_at // self.window_s < self.clock() // self.window_s
        if due:
            self._write_summary()

    def close(self) -> None:
        """Write what is counted, whatever the window (at shutdown)."""
        if self._tally.count:
            self._write_summary()

    def _take_budget(self, now: float) -> bool:
        with self._lock:
            window = int(now // self.window_s)
            if window != self._window:
                self._window, self._recorded, self._overflowed = window, 0, False
            if self._recorded >= self.budget:
                return False
            self._recorded += 1
            return True

    def _write_summary(self) -> None:
        with self._lock:
            tally, self._tally = self._tally, Tally()
        if tally.count == 0:
            return
        try:
            self.access.record(LOGIN_FAILED_SUMMARY, "anonymous", None, **tally.payload(self.method, self.window_s))
        except AccessNotRecorded:
            with self._lock:
                self._tally.merge(tally)
            raise


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
