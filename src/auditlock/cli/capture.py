"""`auditlock capture [--once | --setup [--dry-run]]`: PostgreSQL row changes from the WAL (extra `capture`)."""

from __future__ import annotations

import argparse
import logging
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of capture."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="capture everything committed so far and exit")
    mode.add_argument("--setup", action="store_true",
                      help="create what the database needs (publication, replica identity, triggers, slot) and "
                           "print the SQL; idempotent, never drops anything")
    parser.add_argument("--dry-run", action="store_true", help="with --setup: only print the SQL")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    """Run capture (or its setup); exit 1 with one clear message on any refusal."""
    from auditlock.cli.agent import configure_json_logging  # noqa: PLC0415

    configure_json_logging(args.log_level)
    if args.dry_run and not args.setup:
        print("auditlock capture: --dry-run goes with --setup", file=sys.stderr)
        return 2
    try:
        from auditlock.capture.service import Capture  # noqa: PLC0415 - psycopg only for this command
    except ImportError as exc:
        print(f"auditlock capture needs the 'capture' extra: pip install 'auditlock[capture]' ({exc})",
              file=sys.stderr)
        return 1
    try:
        config = load_config(args.config)
        return _setup(config, dry_run=args.dry_run) if args.setup else _capture(Capture, config, once=args.once)
    except AuditlockError as exc:
        print(f"auditlock capture: {exc}", file=sys.stderr)
        return 1


def _capture(capture_class: type, config: object, *, once: bool) -> int:
    capture = capture_class(config, serve_http=not once)
    log = logging.getLogger("auditlock.capture")
    with capture.staging.locked():
        capture.start()
        try:
            events = capture.run_once() if once else capture.run()
        finally:
            capture.close()
    log.info("auditlock capture: stopped", extra={"events": events})
    return 0


def _setup(config: object, *, dry_run: bool) -> int:
    from auditlock.capture import database, setup  # noqa: PLC0415
    from auditlock.capture.tables import captured_tables  # noqa: PLC0415
    from auditlock.config.model import Config  # noqa: PLC0415

    assert isinstance(config, Config)
    settings = config.capture
    tables = captured_tables(config)
    with database.connect(settings.load_dsn()) as conn:
        plan = setup.plan_setup(conn, settings.slot, settings.publication, tables, settings.app_roles)
        for statement in plan.statements:
            print(f"{statement};")
        if not dry_run:
            setup.apply_setup(conn, plan)
    for note in plan.notes:
        print(f"auditlock capture --setup: note: {note}", file=sys.stderr)
    return 0
