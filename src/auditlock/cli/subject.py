"""`auditlock subject export`: every event of a data subject, decrypted, as JSONL (an access request), itself
recorded as `privacy.subject_exported`; `auditlock subject request`: record a data-subject request's step
(`privacy.request_received` / `_fulfilled` / `_refused`).

Exit status: 0 on success, 1 when the configuration, the key store, the spool or the archive is not usable
(nothing is exported unrecorded), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.handler import event_types
from auditlock.textsafe import error_text

_REQUEST_EVENTS = {"received": event_types.PRIVACY_REQUEST_RECEIVED,
                   "fulfilled": event_types.PRIVACY_REQUEST_FULFILLED,
                   "refused": event_types.PRIVACY_REQUEST_REFUSED}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of subject (its subcommands export and request)."""
    actions = parser.add_subparsers(dest="subject_command", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="every event of the subject, decrypted, as JSONL (recorded)")
    _common(export)
    export.add_argument("--reason", help="why (recorded with the export)")
    export.add_argument("--since", help="start, inclusive: a date, month or RFC 3339 (default: all time, UTC)")
    export.add_argument("--until", help="end, exclusive (default: now)")
    export.add_argument("--include-spool", action="store_true", help="add events still in the local spool")
    export.add_argument("--cache-dir", type=Path, help="where downloaded objects are kept (as for query)")
    export.add_argument("--output", "-o", type=Path, help="write the JSONL here (created 0600) instead of stdout")
    request = actions.add_parser("request", help="record a data-subject request's step: received, fulfilled or "
                                                 "refused")
    _common(request)
    request.add_argument("step", choices=sorted(_REQUEST_EVENTS), help="what happened to the request")
    request.add_argument("--type", dest="request_type", required=True, choices=event_types.PRIVACY_REQUEST_TYPES,
                         help="the request's type")
    request.add_argument("--reason", help="why (required for refused)")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--subject", required=True, help="the data subject, <Type>:<id>, e.g. Customer:42")
    parser.add_argument("--actor", required=True, help="who acts (recorded as the event's actor), e.g. user:7")
    parser.add_argument("--request-id", help="the data-subject request's id (recorded with the event)")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; see the module docstring for the exit status."""
    try:
        if args.subject_command == "request":
            return _request(args)
        return _export(args)
    except _Usage as exc:
        print(f"auditlock subject {args.subject_command}: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"auditlock subject needs the 'erasure' and 'query' extras: pip install 'auditlock[erasure,query]' "
              f"({exc})", file=sys.stderr)
        return 1
    except AuditlockError as exc:
        print(f"auditlock subject {args.subject_command}: {error_text(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"auditlock subject {args.subject_command}: cannot write {exc.filename or 'the output'}: "
              f"{exc.strerror}", file=sys.stderr)
        return 1


class _Usage(Exception):
    """A flag's value is wrong; the message names the flag."""


def _request(args: argparse.Namespace) -> int:
    from auditlock.privacy.erase import check_subject, record  # noqa: PLC0415

    if args.step == "refused" and not (args.reason or "").strip():
        raise _Usage("--reason is required for a refused request: say why it was refused")
    if args.request_id is None:
        raise _Usage("--request-id is required: the id under which the request is tracked")
    payload = {"request_type": args.request_type, "request_id": args.request_id,
               "subject": check_subject(args.subject), "reason": args.reason if args.step == "refused" else None}
    event_id = record(load_config(args.config), _REQUEST_EVENTS[args.step], args.actor, payload)
    print(f"auditlock subject request: recorded {_REQUEST_EVENTS[args.step]} as event {event_id}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from auditlock.archive.timerange import TimeFormatError, parse_range  # noqa: PLC0415
    from auditlock.privacy.export import export_subject  # noqa: PLC0415 - duckdb/boto3/cryptography on use only
    from auditlock.query.cache import default_cache_dir  # noqa: PLC0415

    try:
        time_range = parse_range(args.since, args.until, dt.datetime.now(dt.UTC))
    except TimeFormatError as exc:
        raise _Usage(str(exc)) from exc
    config = load_config(args.config)
    cache_dir = args.cache_dir or config.query.cache_dir or default_cache_dir()
    if args.output is None:
        count = export_subject(config, args.subject, sys.stdout, actor=args.actor, cache_dir=cache_dir,
                               request_id=args.request_id, reason=args.reason, time_range=time_range,
                               include_spool=args.include_spool, err=sys.stderr)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            count = export_subject(config, args.subject, out, actor=args.actor, cache_dir=cache_dir,
                                   request_id=args.request_id, reason=args.reason, time_range=time_range,
                                   include_spool=args.include_spool, err=sys.stderr)
    print(f"auditlock subject export: {count} events", file=sys.stderr)
    return 0
