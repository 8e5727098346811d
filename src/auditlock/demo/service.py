"""The demo's sample shop: web requests log through structlog + `AuditProcessor`, a nightly import job through
stdlib `logging` + `AuditHandler` (configured with `dictConfig`) in its own thread. `say` narrates each call."""

from __future__ import annotations

import logging
import logging.config
import re
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import structlog

import auditlock
from auditlock.config import Config

Say = Callable[[str], None]
JOB_LOGGER = "shop.jobs"
ALICE = "alice@example.com"


class Shop:
    """The sample service. Every successful audit call adds one to `emitted`."""

    def __init__(self, config: Config, say: Say) -> None:
        self.say = say
        self.spool = Path(config.spool.dir)
        self.emitted = 0
        self.processor = auditlock.AuditProcessor(config)
        # A private logger chain (no global structlog.configure): audit events go to the spool and leave the
        # chain; anything else would be rendered as the app's own JSON log line.
        self.log = structlog.wrap_logger(structlog.ReturnLogger(), processors=[
            self.processor, structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer()])
        logging.config.dictConfig({
            "version": 1, "disable_existing_loggers": False,
            "handlers": {"audit": {"()": "auditlock.AuditHandler", "config": config}},
            "loggers": {JOB_LOGGER: {"handlers": ["audit"], "level": "INFO", "propagate": False}},
        })
        self.job_log = logging.getLogger(JOB_LOGGER)

    def audit(self, event_type: str, note: str = "", **fields: Any) -> None:
        """One structlog audit call (under the bound actor), narrated."""
        self.log.info(event_type, **fields)
        self._told(event_type, fields, note)

    def _told(self, event_type: str, fields: Mapping[str, Any], note: str) -> None:
        self.emitted += 1
        who = auditlock.current_actor()
        target = f"{fields['target_type']}:{fields['target_id']}" if "target_type" in fields else ""
        self.say(f"{who.id if who else fields.get('actor_id', '?'):<19} {event_type:<21} {target:<13} {note}")

    def nightly_import(self, updates: list[tuple[int, str, str]]) -> None:
        """The background job: its own thread, its own actor, stdlib logging with `extra=`."""
        def job() -> None:
            with auditlock.actor("job:nightly-import"):
                for order_id, before, after in updates:
                    fields = {"target_type": "Order", "target_id": order_id,
                              "before": {"status": before}, "after": {"status": after}}
                    self.job_log.info("order.updated", extra=fields)
                    self._told("order.updated", fields, f"status {before} → {after}   (logging + dictConfig)")

        thread = threading.Thread(target=job, name="nightly-import")
        thread.start()
        thread.join()

    def stored(self, event_type: str) -> dict[str, Any]:
        """The newest spool line of this type, as stored (read back from the spool's segment files)."""
        events = [orjson.loads(line) for path in sorted(self.spool.glob("*.jsonl"))
                  for line in path.read_bytes().splitlines() if line]
        newest: dict[str, Any] = [e for e in events if e["event_type"] == event_type][-1]
        return newest

    def close(self) -> int:
        """Close both writers: each seals its segment after its clean-end record. Returns the writers closed."""
        self.processor.close()
        handlers = list(self.job_log.handlers)
        for handler in handlers:
            self.job_log.removeHandler(handler)
            handler.close()
        return 1 + len(handlers)


def run_story(shop: Shop) -> None:
    """The day in the shop the demo records."""
    with auditlock.actor("user:82", ip="203.0.113.7"):
        shop.audit("auth.login_succeeded", "password + MFA", method="password", mfa=True)
        shop.audit("order.created", f"status new, customer_email {ALICE} (stored hmac'd)", target_type="Order",
                   target_id=1234, status="new", total=Decimal("59.90"), currency="EUR", customer_email=ALICE)
        shop.audit("order.updated", "status new → paid", target_type="Order", target_id=1234,
                   before={"status": "new"}, after={"status": "paid"})
    with auditlock.actor("user:17", ip="198.51.100.23"):
        shop.audit("auth.login_failed", "wrong password", method="password", reason="bad_password")
    with auditlock.actor("user:1", ip="203.0.113.50"):
        shop.audit("access.role_granted", "role refunds, scope shop", target_type="User", target_id=82,
                   role="refunds", scope="shop")
    shop.nightly_import([(1234, "paid", "shipped"), (1235, "paid", "shipped")])
    _support_reads(shop)
    _dropped_field(shop)


def _support_reads(shop: Shop) -> None:
    with auditlock.actor("user:5", ip="10.0.4.12"):
        shop.audit("data.accessed", "justification: 'ticket #4711: refund dispute'", target_type="Customer",
                   target_id=7, justification="ticket #4711: refund dispute", fields=["email", "country"])
        try:
            shop.log.info("data.accessed", target_type="Customer", target_id=7, fields=["email"])
        except auditlock.EventError as exc:
            shop.say(f"{'user:5':<19} {'data.accessed':<21} {'Customer:7':<13} refused, nothing written: {exc}")


def _dropped_field(shop: Shop) -> None:
    call = {"target_type": "Customer", "target_id": 7,
            "before": {"email": ALICE, "country": "DE"}, "after": {"email": "alice@example.org", "country": "AT"},
            "card_number": "4111 1111 1111 1111"}
    with auditlock.actor("user:82", ip="203.0.113.7"):
        shop.audit("customer.updated", "email and country changed; card_number is not allowlisted", **call)
    stored = shop.stored("customer.updated")
    shop.say("")
    shop.say(f"{'field':<13} {'passed to log.info(...)':<50} stored in the spool")
    for field, passed, kept in _side_by_side(call, stored):
        shop.say(f"{field:<13} {passed:<50} {kept}")
    shop.say("")


def _side_by_side(call: Mapping[str, Any], stored: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """Rows (field, what the call passed, what the record holds) for the dropped-field example."""
    rows = [(key, _short(call[key]), _short(stored[key])) for key in ("target_type", "target_id")]
    changes = stored["payload"].get("changes", {})
    for i, name in enumerate(call["before"]):
        passed = f"{_short(call['before'][name])} → {_short(call['after'][name])}"
        kept = f"changes.{name} = {_short(changes[name])}" if name in changes else "(unchanged: not stored)"
        rows.append(("before/after" if i == 0 else "", f"{name}: {passed}", kept))
    for key in call.keys() - {"target_type", "target_id", "before", "after"}:
        kept = _short(stored["payload"][key]) if key in stored["payload"] else "dropped: not in the allowlist"
        rows.append((key, _short(call[key]), kept))
    return rows


def _short(value: Any) -> str:
    """Compact JSON; an hmac shortened to its first 12 hex digits."""
    text = orjson.dumps(value, default=str).decode()
    return re.sub(r"(hmac-sha256:[0-9a-f]{12})[0-9a-f]+", r"\1…", text)
