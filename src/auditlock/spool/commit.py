"""Group commit for durability "sync": a logging call returns only once its own line is fdatasync'd, but concurrent
callers share the fdatasync (the leader/follower pattern of a database's group commit).

A caller appends its line under the writer lock, releases it, then waits for its segment's `durable_size` to reach
the end of its line. If no fdatasync is running it becomes the leader: it notes the segment's size under the writer
lock and fdatasyncs outside every lock, which makes every line appended before that point durable at once. The
others park, each on a slot of its own (a `threading.Lock` it blocks on, with the segment and end offset it waits
for), and each is woken once, only when it has something to do — never to find it must wait again:

- whoever makes lines durable (the leader after its fdatasync, a `settle`) answers every parked slot whose end its
  fdatasync covered: the slot leaves the parked list and its lock is released, and that caller returns without
  taking any shared lock again;
- a take-back (below) answers every parked slot of that segment with the failure: those callers raise;
- the leader, once done, hands the leadership to exactly one parked slot — the oldest, never answered since every
  slot is answered the moment its line is — or, if none is parked, gives it up.

(A `threading.Condition` would wake every waiter on each change; each then re-takes the condition's lock, checks,
and most wait again: ~14 wake-ups and as many hand-offs of one lock per fdatasync at 16 threads. Here a waiter is
woken once, when it is answered or is to lead.)

A failed fdatasync fails every caller whose line it did not make durable, and takes those lines back — the segment
is truncated to its last durable size and abandoned (`SpoolWriter._abandon`: the writer continues under a new id),
exactly as a single caller's failure does. Whoever holds the writer lock next settles a failure (the leader, an
appender, a rotation, `flush` or `close`), before anything else is appended or the segment's descriptor is closed.

Invariants (the writer lock is the `SpoolWriter`'s; the group commit's own lock is taken after it, never before):
- The leader takes the segment's descriptor under the writer lock and marks the segment in flight before releasing
  it; whoever closes a segment's descriptor (seal, abandon) holds the writer lock and first waits until no
  fdatasync is in flight on it (`settle`). So no fdatasync ever runs on a closed or reused descriptor, and no two
  fdatasyncs of one segment run at once: after a failed one a second on the same open file could report success
  although the kernel dropped the pages (the error is reported once per open file).
- A segment leaves the writer (sealed or abandoned) only settled: every line in it durable, or taken back and its
  callers failed. Callers parked on an older segment are therefore answered by the rotation that sealed it.
- `durable_size` and `failure` only change under the group commit's lock, and in the same hold every parked slot
  they answer is answered: so every parked slot waits for a line no one has answered yet.
- Parking, answering and handing on the leadership happen under that lock, and a caller parks only while another
  holds the leadership. The leadership is given up only when no slot is parked, and its holder always passes it on
  (even when interrupted). So no caller stays parked: each parked slot is answered by the leader or `settle` that
  makes its line durable, failed by the take-back of its segment, or handed the leadership — and a leader's
  fdatasync covers every line appended before it, so it answers every slot parked before it began (a slot of an
  older segment was answered when that segment was settled).

Commit delay (`[spool] commit_delay_us`, as PostgreSQL's `commit_delay`/`commit_siblings`): a leader that finds at
least `COMMIT_SIBLINGS` other callers waiting (answered or not: callers just answered are about to log again)
waits up to that long before it takes the segment, so the callers still appending join its fdatasync, not the next
one. It waits holding nothing but the leadership (no lock, no segment, nothing in flight), so every invariant above
holds as without it; a settle or a take-back during the wait ends it early. A lone caller, or a few, never wait:
the delay only pays when the fdatasyncs, not the callers, are what is scarce.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from auditlock.spool.segment import OpenSegment

log = logging.getLogger("auditlock.spool")

# A leader delays its fdatasync only when at least this many other callers wait (measured: with 3 or fewer the
# delay only idles the disk; docs/architecture.md, "`sync` mode has a commit delay").
COMMIT_SIBLINGS = 4


class _Slot:
    """One caller's place in the group commit: the line it waits for, and a lock it blocks on while parked, until
    it is answered (its line durable, or taken back: `failure`) or handed the leadership (`lead`, also set while
    it leads). Its lock is held again once it wakes, so it can park again."""

    __slots__ = ("_lock", "end", "failure", "lead", "segment")

    def __init__(self, segment: OpenSegment, end: int) -> None:
        self.segment, self.end = segment, end
        self.failure: OSError | None = None
        self.lead = False
        self._lock = threading.Lock()
        self._lock.acquire()

    def park(self) -> None:
        """Block until `wake`."""
        self._lock.acquire()

    def wake(self) -> None:
        """Let the parked caller go (under the group commit's lock, once it left the parked list, after setting
        `failure` or `lead`)."""
        self._lock.release()


class GroupCommit:
    """One writer's shared fdatasyncs in durability "sync"."""

    def __init__(self, writer_lock: threading.RLock, current: Callable[[], OpenSegment | None],
                 abandon_current: Callable[[], None], stats: dict[str, Any], *, delay_us: int = 0) -> None:
        """`current` returns the writer's open segment and `abandon_current` abandons it (both under the writer
        lock); `stats` is the writer's counters (`sync_failures`, and `events`/`bytes` less what is taken back);
        `delay_us` is the commit delay (0: none)."""
        self._writer_lock = writer_lock
        self._current = current
        self._abandon_current = abandon_current
        self._stats = stats
        self._lock = threading.Lock()
        # Notified when the fdatasync in flight ends, a settle makes lines durable, or a take-back: what `settle`
        # (waiting for the fdatasync in flight) and the commit delay wait for. Parked callers never wait on it.
        self._progress = threading.Condition(self._lock)
        self._leading = False
        self._parked: list[_Slot] = []  # oldest first; every one waits for a line not yet answered
        self._in_flight: OpenSegment | None = None
        self._delay_s = delay_us / 1_000_000
        # One item per caller between its append and its return, the leader included (append and pop are atomic,
        # so a caller just answered leaves it without taking a lock).
        self._callers: deque[None] = deque()
        self.delays = 0  # fdatasyncs whose leader waited for the commit delay

    @property
    def waiting(self) -> int:
        """How many callers are between their append and their answer, the leader included."""
        return len(self._callers)

    def wait_durable(self, segment: OpenSegment, end: int) -> None:
        """Return once `segment` is durable up to byte `end`; raise `OSError` if that line was taken back.

        The caller must not hold the writer lock (a leader needs it to pick up the segment).
        """
        slot = _Slot(segment, end)
        self._callers.append(None)
        try:
            while not self._answered_or_leading(slot):
                self._lead_and_pass_on(slot)
        except BaseException:  # taken back, or interrupted: leave no slot parked and no leadership unclaimed
            self._let_go(slot)
            raise
        finally:
            self._callers.pop()

    def _answered_or_leading(self, slot: _Slot) -> bool:
        """True once the caller's line is answered (raise `OSError` if taken back); False once it is to lead.
        Parks it meanwhile if another caller leads."""
        with self._lock:
            if _answered(slot.segment, slot.end):
                return True
            if not self._leading:
                self._leading = slot.lead = True
                return False
            self._parked.append(slot)
        slot.park()
        if slot.lead:
            return False
        if slot.failure is not None:
            raise OSError(slot.failure.errno, slot.failure.strerror)
        return True

    def _lead_and_pass_on(self, slot: _Slot) -> None:
        try:
            if self._delay_s and len(self._callers) > COMMIT_SIBLINGS:
                self._delay()
            self._lead()
        finally:
            with self._lock:
                slot.lead = False
                self._pass_leadership()

    def _let_go(self, slot: _Slot) -> None:
        """A caller leaves early: unpark its slot, or pass on the leadership it was handed but did not use."""
        with self._lock:
            if slot in self._parked:
                self._parked.remove(slot)
            elif slot.lead:
                slot.lead = False
                self._pass_leadership()

    def _pass_leadership(self) -> None:
        """(lock held) Hand the leadership to the oldest parked caller, or give it up if none is parked."""
        if self._parked:
            slot = self._parked.pop(0)
            slot.lead = True
            slot.wake()
        else:
            self._leading = False

    def _answer_parked(self) -> None:
        """(lock held, just after `durable_size` or `failure` changed) Wake every parked caller now answered."""
        waiting = []
        for slot in self._parked:
            segment = slot.segment
            if segment.durable_size >= slot.end:
                slot.wake()
            elif segment.failure is not None:
                slot.failure = segment.failure
                slot.wake()
            else:
                waiting.append(slot)
        self._parked = waiting

    def _delay(self) -> None:
        """The commit delay: give the callers still appending up to `commit_delay_us` to join this fdatasync
        (nothing is held meanwhile but the leadership; a settle or a take-back, which notify, end it early)."""
        with self._lock:
            self.delays += 1
            self._progress.wait(self._delay_s)

    def _lead(self) -> None:
        """fdatasync the writer's open segment as it is now, covering every line appended to it so far."""
        with self._writer_lock:
            segment = self._current()
            if segment is None:
                return  # sealed or abandoned since: already settled, the caller's line is answered
            if segment.sync_error is not None:
                self._abandon_current()  # a failed leader's lines are taken back before anything else
                return
            size, lines, fd = segment.size, segment.lines, segment.fd
            if segment.durable_size >= size:
                return
            with self._lock:
                self._in_flight = segment
        error: OSError | None = None
        completed = False
        try:
            error, completed = _fdatasync(fd), True
        finally:  # even if interrupted (KeyboardInterrupt): a closer waits until nothing is in flight
            with self._lock:
                self._in_flight = None
                if completed and error is None:
                    _mark_durable(segment, size, lines)
                    self._answer_parked()
                elif error is not None:
                    segment.sync_error = error
                self._progress.notify_all()
        if error is not None:
            with self._writer_lock:
                if segment is self._current():
                    self._abandon_current()

    def settle(self, segment: OpenSegment) -> bool:
        """Before `segment` is sealed, abandoned or flushed (writer lock held): make every line in it durable, or
        take back the lines no fdatasync covered (a failed one) and fail their callers. False if lines were taken
        back: the caller must then abandon the segment (it may hold pages the kernel dropped)."""
        with self._lock:
            while self._in_flight is segment:
                self._progress.wait()
        if segment.failure is not None:
            return False
        if segment.sync_error is None and segment.durable_size < segment.size:
            size, lines = segment.size, segment.lines
            error = _fdatasync(segment.fd)
            with self._lock:
                if error is None:
                    _mark_durable(segment, size, lines)
                    self._answer_parked()
                    self._progress.notify_all()
                else:
                    segment.sync_error = error
        if segment.sync_error is None:
            return True
        self._take_back(segment)
        return False

    def _take_back(self, segment: OpenSegment) -> None:
        error = segment.sync_error
        assert error is not None
        self._stats["sync_failures"] += 1
        log.error("auditlock: fsync of %s failed (%s); taking back %d unsynced line(s) and abandoning the segment",
                  segment.path, error.strerror, segment.lines - segment.durable_lines)
        try:
            os.ftruncate(segment.fd, segment.durable_size)
        except OSError:
            log.error("auditlock: could not remove the unsynced lines from %s; they may still be shipped",
                      segment.path)
        self._stats["events"] -= segment.lines - segment.durable_lines
        self._stats["bytes"] -= segment.size - segment.durable_size
        with self._lock:
            segment.size, segment.lines = segment.durable_size, segment.durable_lines
            segment.failure = error
            self._answer_parked()
            self._progress.notify_all()


def _answered(segment: OpenSegment, end: int) -> bool:
    if segment.durable_size >= end:
        return True
    if segment.failure is not None:
        raise OSError(segment.failure.errno, segment.failure.strerror)
    return False


def _fdatasync(fd: int) -> OSError | None:
    try:
        os.fdatasync(fd)
    except OSError as exc:
        return exc
    return None


def _mark_durable(segment: OpenSegment, size: int, lines: int) -> None:
    if size > segment.durable_size:
        segment.durable_size, segment.durable_lines = size, lines
