"""`auditlock athena-ddl`: the Athena table (partition projection) and de-duplicating view for [sink];
with `--ocsf`, also the view `<table>_ocsf` that maps every event to OCSF (docs/querying.md)."""

from __future__ import annotations

import argparse
import re
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.query import ddl
from auditlock.textsafe import error_text

_NAME = re.compile(r"^[a-z_][a-z0-9_]*\Z")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of athena-ddl."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--database", type=_name, default=ddl.DEFAULT_DATABASE, help="Glue database (%(default)s)")
    parser.add_argument("--table", type=_name, default=ddl.DEFAULT_TABLE,
                        help="table name (%(default)s); the view is <table>_unique")
    parser.add_argument("--first-year", type=_year, default=ddl.DEFAULT_FIRST_YEAR,
                        help="first year partition projection covers (%(default)s)")
    parser.add_argument("--last-year", type=_year, default=ddl.DEFAULT_LAST_YEAR,
                        help="last year partition projection covers (%(default)s)")
    parser.add_argument("--ocsf", action="store_true",
                        help="also create the view <table>_ocsf: every event as an OCSF 1.5 record")


def run(args: argparse.Namespace) -> int:
    """Print the statements; exit 2 for a bad year range, 1 if the config has no [sink] bucket."""
    if args.first_year > args.last_year:
        print(f"auditlock athena-ddl: error: argument --first-year: {args.first_year} is after --last-year "
              f"{args.last_year}", file=sys.stderr)
        return 2
    try:
        sink = load_config(args.config).sink
    except AuditlockError as exc:
        print(f"auditlock athena-ddl: {error_text(exc)}", file=sys.stderr)
        return 1
    if not sink.bucket:
        print("auditlock athena-ddl: [sink] bucket is not set; set it in auditlock.toml or AUDITLOCK_SINK_BUCKET",
              file=sys.stderr)
        return 1
    print(ddl.athena_ddl(sink.bucket, sink.prefix, database=args.database, table=args.table,
                         first_year=args.first_year, last_year=args.last_year,
                         ocsf_product_version=_ocsf_version() if args.ocsf else None), end="")
    return 0


def _name(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an Athena name: lowercase letters, digits and '_', "
                                         "not starting with a digit")
    return text


def _year(text: str) -> int:
    if not re.fullmatch(r"\d{4}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a four-digit year")
    return int(text)


def _ocsf_version() -> str:
    """The OCSF version of the mapping (imported only with --ocsf: the CLI builds every command's parser)."""
    from auditlock.query.ocsf import product_version  # noqa: PLC0415 - only with --ocsf

    return product_version()

