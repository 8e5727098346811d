"""`auditlock verify`: the integrity report over the archive (S3 or a downloaded copy) or the local spool.

Exit status: 0 when clean, 1 with findings, 2 on a usage error or when verification could not run (config,
credentials, an unreadable key or directory) — never 0 or 1 for a run that did not happen — and 3 when the
archive holds nothing to verify (no digest, no events object in the selected months: a wrong bucket, prefix or
range, or a deployment that has not shipped yet).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import Any

from auditlock.archive import timerange
from auditlock.archive.timerange import TimeFormatError, TimeRange
from auditlock.errors import AuditlockError
from auditlock.textsafe import error_text

_DURATION = re.compile(r"^(\d{1,9})([smhdw]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
NOTHING_TO_VERIFY = 3  # exit status: the archive run found nothing at all to check


class _UsageError(Exception):
    """A flag's value is wrong; the message names the flag."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of verify."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--since", help="first month to check: 2026-11, a date, RFC 3339 or 30d (UTC)")
    parser.add_argument("--until", help="end, exclusive; a date or month means through its end (UTC)")
    parser.add_argument("--public-key", type=Path, metavar="PATH", action="append",
                        help="Ed25519 public key (PEM), or a directory of *.pem public keys; repeat for several "
                             "(after a signing key rotation): every digest must carry a valid signature by the key "
                             "its fingerprint names")
    parser.add_argument("--format", default="text", choices=["text", "json"], help="report format")
    parser.add_argument("--spool", type=Path, metavar="DIR", help="check this local spool instead of the archive")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="with --spool: the agent's state directory ([agent] state_dir; default DIR/.agent), "
                             "whose witness the spool is compared with")
    parser.add_argument("--source", type=Path, metavar="DIR",
                        help="check a downloaded copy of the archive prefix (DIR/events/…, DIR/digests/…)")
    parser.add_argument("--open-grace", default="1h", metavar="DURATION",
                        help="a writer without its clean end whose last event is newer than this is listed as "
                             "open, not as a missing tail (default 1h; 90s, 30m, 2d, 0)")


def run(args: argparse.Namespace) -> int:
    """Run the verification; see the module docstring for the exit status."""
    try:
        report = _verify(args)
    except _UsageError as exc:
        print(f"auditlock verify: error: {error_text(exc)}", file=sys.stderr)
        return 2
    except AuditlockError as exc:
        print(f"auditlock verify: cannot verify: {error_text(exc)}", file=sys.stderr)
        return 2
    from auditlock.verify.findings import write_json, write_text  # noqa: PLC0415

    (write_json if args.format == "json" else write_text)(report, sys.stdout)
    if report.nothing_to_verify:
        return NOTHING_TO_VERIFY
    return 0 if report.clean else 1


def _verify(args: argparse.Namespace) -> Any:
    if args.state_dir is not None and args.spool is None:
        raise _UsageError("argument --state-dir: only with --spool")
    if args.spool is not None:
        for flag in ("source", "public_key", "since", "until"):
            if getattr(args, flag) is not None:
                raise _UsageError(f"argument --spool: cannot be combined with --{flag.replace('_', '-')}")
        from auditlock.verify.spool import verify_spool  # noqa: PLC0415

        return verify_spool(args.spool, args.state_dir)
    from auditlock.verify.archive import ArchiveOptions, verify_archive  # noqa: PLC0415

    now = dt.datetime.now(dt.UTC)
    options = ArchiveOptions(time_range=parse_range(args.since, args.until, now), public_key=_public_key(args),
                             open_grace=parse_duration(args.open_grace), now=now)
    return verify_archive(*_source(args, options))


def _source(args: argparse.Namespace, options: Any) -> tuple[Any, Any]:
    from dataclasses import replace  # noqa: PLC0415

    from auditlock.config import load_config  # noqa: PLC0415
    from auditlock.verify.source import DirectorySource, s3_source  # noqa: PLC0415

    if args.source is not None:
        if not args.config:
            return DirectorySource(args.source), options
        config = load_config(args.config)
        return DirectorySource(args.source), replace(options, classes=config.retention.classes,
                                                     max_object_bytes=config.sink.batch_max_bytes)
    config = load_config(args.config)
    return s3_source(config.sink), replace(options, classes=config.retention.classes,
                                           max_object_bytes=config.sink.batch_max_bytes)


def parse_range(since: str | None, until: str | None, now: dt.datetime) -> TimeRange:
    """The `--since`/`--until` range; a bad value is a usage error naming its flag."""
    try:
        return timerange.parse_range(since, until, now)
    except TimeFormatError as exc:
        raise _UsageError(f"argument {exc.flag or '--since'}: {exc}") from exc


def parse_duration(text: str) -> dt.timedelta:
    """`--open-grace`: a number with an optional unit s, m, h, d or w (seconds without one)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise _UsageError(f"argument --open-grace: {text!r} is not a duration; use e.g. 90s, 30m, 1h, 2d or 0")
    return dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])


def _public_key(args: argparse.Namespace) -> Any:
    """The signing keyring of every `--public-key` (None without one)."""
    if not args.public_key:
        return None
    try:
        from auditlock.verify.keyring import KeyringError, SigningKeyring  # noqa: PLC0415
    except ImportError as exc:
        raise _UsageError(f"argument --public-key: needs the 'cryptography' package ({exc})") from exc
    try:
        return SigningKeyring.from_paths(args.public_key)
    except KeyringError as exc:
        raise _UsageError(f"argument --public-key: {exc}") from exc
