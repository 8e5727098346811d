"""`auditlock provision`: create or update the archive bucket to match the config (idempotent; never weakens)."""

from __future__ import annotations

import argparse
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.textsafe import error_text, terminal_safe


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of provision."""
    parser.add_argument("--bucket", help="bucket to create or check (default: [sink] bucket)")
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--region", help="region to create the bucket in (default: [sink] region, else boto3's)")
    parser.add_argument("--dry-run", action="store_true", help="print what would change; change nothing")


def run(args: argparse.Namespace) -> int:
    """Print each change (or "no changes") and each note; exit 1 on a refusal or error."""
    from auditlock.bucket.provision import provision  # noqa: PLC0415 - boto3 only for this command

    try:
        config = load_config(args.config)
        bucket = args.bucket or config.sink.bucket
        if not bucket:
            print("auditlock provision: no bucket: pass --bucket NAME or set [sink] bucket", file=sys.stderr)
            return 2
        report = provision(config, bucket, region=args.region, dry_run=args.dry_run)
    except AuditlockError as exc:
        print(f"auditlock provision: {error_text(exc)}", file=sys.stderr)
        return 1
    print(f"bucket {bucket}:")
    for line in report.lines(args.dry_run):
        print(f"  {terminal_safe(line)}")
    return 0
