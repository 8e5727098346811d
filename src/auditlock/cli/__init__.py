"""The `auditlock` command line. Each command imports its own room lazily, so `check-config` never loads boto3."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from auditlock.cli import (
    agent,
    athena_ddl,
    capture,
    check_config,
    demo,
    erase,
    hash,
    legal_hold,
    lifecycle,
    provision,
    query,
    subject,
    ui,
    verify,
)

# Each command module offers `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "check-config": ("validate a config file and print every problem", check_config.add_arguments,
                     check_config.run),
    "agent": ("ship the spool to S3 Object Lock (the sidecar; --once drains and exits)", agent.add_arguments,
              agent.run),
    "capture": ("record PostgreSQL row changes from the WAL, with who made them (--setup prepares the database)",
                capture.add_arguments, capture.run),
    "query": ("filter the archive (and the spool) with DuckDB; table, JSONL or CSV", query.add_arguments,
              query.run),
    "athena-ddl": ("print the Athena table (partition projection) and de-duplicating view", athena_ddl.add_arguments,
                   athena_ddl.run),
    "verify": ("check the archive (or --spool) is complete and unchanged; exit 1 on any finding",
               verify.add_arguments, verify.run),
    "lifecycle": ("print the bucket lifecycle and Object Lock configuration derived from the config, as JSON",
                  lifecycle.add_arguments, lifecycle.run),
    "provision": ("create or update the bucket to match the config (idempotent; never weakens a lock)",
                  provision.add_arguments, provision.run),
    "ui": ("the admin web view over the archive; every search is itself audited", ui.add_arguments, ui.run),
    "legal-hold": ("set, release or show S3 legal holds on the archive objects of a period (and target or actor)",
                   legal_hold.add_arguments, legal_hold.run),
    "hash": ("print the hmac forms of a value (one per key), to search for a hashed field", hash.add_arguments,
             hash.run),
    "erase": ("crypto-shred a data subject: record privacy.subject_erased, destroy its keys (values read [erased])",
              erase.add_arguments, erase.run),
    "subject": ("data-subject requests: export a subject's events decrypted (recorded), record a request's step",
                subject.add_arguments, subject.run),
    "demo": ("run the whole pipeline on an embedded S3 server and show what it guarantees", demo.add_arguments,
             demo.run),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="auditlock", description="Tamper-evident audit trails on S3 Object Lock.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit status (2 for usage errors, as argparse does)."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def console() -> None:
    """The `auditlock` console script."""
    sys.exit(main())
