"""`auditlock erase`: crypto-shred a data subject — record `privacy.subject_erased`, then destroy its keys.

Exit status: 0 when the subject's keys are gone (also when it had none: erasing is idempotent), 1 when nothing
could be done or the erasure is incomplete (the message says which, and running it again finishes it), 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.textsafe import error_text, terminal_safe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of erase."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--subject", required=True, help="the data subject, <Type>:<id>, e.g. Customer:42")
    parser.add_argument("--actor", required=True, help="who erases (recorded as the event's actor), e.g. user:7")
    parser.add_argument("--reason", required=True, help="why, e.g. the erasure request it answers")
    parser.add_argument("--request-id", help="the data-subject request's id (recorded with the event)")


def run(args: argparse.Namespace) -> int:
    """Erase the subject; see the module docstring for the exit status."""
    try:
        from auditlock.privacy.erase import erase_subject  # noqa: PLC0415 - cryptography only for this command
    except ImportError as exc:
        print(f"auditlock erase needs the 'erasure' extra: pip install 'auditlock[erasure]' ({exc})", file=sys.stderr)
        return 1
    try:
        report = erase_subject(load_config(args.config), args.subject, actor=args.actor, reason=args.reason,
                               request_id=args.request_id)
    except AuditlockError as exc:
        print(f"auditlock erase: {error_text(exc)}", file=sys.stderr)
        return 1
    subject = terminal_safe(report.subject)
    if report.key_ids:
        print(f"auditlock erase: {subject}: destroyed {len(report.key_ids)} key(s) ({', '.join(report.key_ids)}); "
              f"recorded as event {report.event_id}. Its erasable values now read as [erased] everywhere.")
    else:
        print(f"auditlock erase: {subject} has no key in the store (never had erasable values, or already "
              f"erased); recorded as event {report.event_id}")
    return 0
