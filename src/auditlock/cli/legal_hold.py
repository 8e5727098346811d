"""`auditlock legal-hold set | release | status`: S3 legal holds on the archive objects of a dispute.

    auditlock legal-hold set     --config F --actor user#7 --from 2026-01 --to 2026-03 --reason "matter 17"
                                 [--target Order:1001] [--by-actor user#2]
    auditlock legal-hold release --config F --actor user#7 --from … --to … --reason "matter 17 closed" […]
    auditlock legal-hold status  --config F --actor user#7 --from … --to … […]

`--actor` is the operator (required: every action is an audit event). `--target TYPE:ID` and `--by-actor ACTOR`
narrow the hold to objects holding such events (bucket/legal_hold.py says how objects are chosen).

Each action is recorded *before* it acts — `legal_hold.set`, `legal_hold.released`, `legal_hold.status_read`
(payload: the scope, the reason, how many objects and digests, their keys up to `MAX_KEYS_RECORDED`) — through
auditlock's own core into the configured spool (fsync'd, `on_error = "raise"`), so it ships with the trail; an
action that cannot be recorded is not taken. Run it where an agent ships that spool.

Exit status: 0 done; 1 when the config, the archive or the trail could not be used, or a hold could not be
changed (each such key is named; running the command again is safe); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from auditlock.archive.timerange import TimeFormatError, parse_range
from auditlock.errors import AuditlockError, EventError, SpoolError
from auditlock.textsafe import error_text, terminal_safe

if TYPE_CHECKING:
    from auditlock.bucket.legal_hold import ArchiveHolds, HoldPlan, HoldScope
    from auditlock.config import Config

SET, RELEASED, STATUS_READ = "legal_hold.set", "legal_hold.released", "legal_hold.status_read"
EVENT_OF = {"set": SET, "release": RELEASED, "status": STATUS_READ}
PAYLOAD_FIELDS = frozenset({"scope", "reason", "objects", "digests", "keys", "keys_truncated", "unlisted"})
MAX_KEYS_RECORDED = 1000


class _UsageError(Exception):
    """A flag's value is wrong; the message names the flag."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of legal-hold."""
    parser.add_argument("action", choices=["set", "release", "status"], help="what to do")
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--actor", required=True, help="who does this (the operator), e.g. user#7: recorded")
    parser.add_argument("--from", dest="since", required=True, metavar="TIME",
                        help="start of the dispute's period, inclusive: 2026-01, a date or RFC 3339 (UTC)")
    parser.add_argument("--to", dest="until", required=True, metavar="TIME",
                        help="end, exclusive; a date or month means through its end (UTC)")
    parser.add_argument("--target", metavar="TYPE:ID", help="only objects holding events on this record")
    parser.add_argument("--by-actor", metavar="ACTOR", help="only objects holding events by this actor")
    parser.add_argument("--reason", help="why (a matter or case reference); required for set and release")


def run(args: argparse.Namespace) -> int:
    """Plan, record, act; see the module docstring for the exit status."""
    try:
        scope = _scope(args, dt.datetime.now(dt.UTC))
        if args.action != "status" and not (args.reason or "").strip():
            raise _UsageError(f"argument --reason: {args.action} needs a reason (a matter or case reference)")
        return _run(args, scope)
    except _UsageError as exc:
        print(f"auditlock legal-hold: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except AuditlockError as exc:
        print(f"auditlock legal-hold: {error_text(exc)}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, scope: HoldScope) -> int:
    from auditlock.bucket.legal_hold import OFF, ON  # noqa: PLC0415
    from auditlock.config import load_config  # noqa: PLC0415

    config = load_config(args.config)
    holds = _holds(config)
    plan = holds.plan(scope, dt.datetime.now(dt.UTC))
    _record(config, EVENT_OF[args.action], args.actor, scope, plan, reason=args.reason)
    for note in plan.notes:
        print(f"note: {terminal_safe(note)}", file=sys.stderr)
    for key in plan.unlisted:
        print(f"note: {terminal_safe(key)}: no digest lists it (verify reports it); held all the same",
              file=sys.stderr)
    if args.action == "status":
        return _print_status(holds.status(plan.keys), plan)
    failed = holds.apply(plan.keys, ON if args.action == "set" else OFF)
    for key, error in sorted(failed.items()):
        print(f"auditlock legal-hold: {terminal_safe(key)}: {terminal_safe(error)}", file=sys.stderr)
    done = "held" if args.action == "set" else "released"
    print(f"{done}: {len(plan.objects)} objects and {len(plan.digests)} digests"
          + (f"; {len(failed)} failed (run the command again)" if failed else ""))
    return 1 if failed else 0


def _print_status(status: dict[str, str], plan: HoldPlan) -> int:
    for key in plan.keys:
        print(f"{status[key]:<4} {terminal_safe(key)}")
    held = sum(1 for value in status.values() if value == "ON")
    print(f"{held} of {len(plan.keys)} held ({len(plan.objects)} objects, {len(plan.digests)} digests)")
    return 0


def _scope(args: argparse.Namespace, now: dt.datetime) -> HoldScope:
    from auditlock.bucket.legal_hold import HoldScope  # noqa: PLC0415

    try:
        time_range = parse_range(args.since, args.until, now)
    except TimeFormatError as exc:
        flag = {"--since": "--from", "--until": "--to"}.get(exc.flag or "--since", "--from")
        raise _UsageError(f"argument {flag}: {exc}") from exc
    target_type = target_id = None
    if args.target is not None:
        target_type, sep, target_id = args.target.partition(":")
        if not sep or not target_type or not target_id:
            raise _UsageError(f"argument --target: {args.target!r} is not TYPE:ID, e.g. Order:1001")
    return HoldScope(time_range, actor=args.by_actor, target_type=target_type, target_id=target_id)


def _holds(config: Config) -> ArchiveHolds:
    from auditlock.archive.client import make_s3_client  # noqa: PLC0415
    from auditlock.bucket.legal_hold import ArchiveHolds  # noqa: PLC0415

    if not config.sink.bucket:
        raise AuditlockError("[sink] bucket is not set; set it in auditlock.toml or AUDITLOCK_SINK_BUCKET")
    return ArchiveHolds(make_s3_client(config.sink), config.sink.bucket, config.sink.prefix,
                        max_object_bytes=config.sink.batch_max_bytes)


def trail_config(config: Config) -> Config:
    """The config the command's own events are written with: `legal_hold.*` included, fsync'd, raising."""
    include = config.events.include if "legal_hold.*" in config.events.include else (*config.events.include,
                                                                                       "legal_hold.*")
    from auditlock.config.model import HmacConfig  # noqa: PLC0415

    return replace(config, spool=replace(config.spool, durability="sync", on_error="raise"),
                   events=replace(config.events, include=include), targets=MappingProxyType({}), hmac=HmacConfig())


def _record(config: Config, event_type: str, actor: str, scope: HoldScope, plan: HoldPlan, *,
            reason: str | None) -> None:
    """Write the action's audit event durably, or raise: an action that cannot be recorded is not taken."""
    from auditlock.handler import event_types  # noqa: PLC0415
    from auditlock.handler.core import AuditCore  # noqa: PLC0415

    event_types.register_standard_fields(event_type, PAYLOAD_FIELDS)
    core = AuditCore(trail_config(config))
    keys = plan.keys
    payload: dict[str, Any] = {"scope": scope.as_payload(), "reason": reason, "objects": len(plan.objects),
                               "digests": len(plan.digests), "keys": keys[:MAX_KEYS_RECORDED],
                               "keys_truncated": len(keys) > MAX_KEYS_RECORDED,
                               "unlisted": plan.unlisted[:MAX_KEYS_RECORDED]}
    try:
        core.emit(event_type, {"actor_id": actor, "payload": payload})
        core.writer.close()
    except (SpoolError, EventError) as exc:
        raise AuditlockError(f"the {event_type} event could not be recorded in the audit trail, so nothing was "
                             f"done: {exc}; fix the spool ([spool] dir) and run the command again") from exc
