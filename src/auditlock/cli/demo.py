"""`auditlock demo`: the whole pipeline (service → spool → agent → S3 Object Lock → query, verify) on an embedded
S3 server in this process, in about ten seconds. Exit status 0 when every event shipped, verify is clean and the
delete of a locked object was refused; 1 otherwise; 2 for a usage error; 130 when interrupted."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of demo."""
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="leave the config, keys, spool, query cache and a copy of the archive in DIR "
                             "(new or empty) and print commands to explore them")


def run(args: argparse.Namespace) -> int:
    """Run the demo; see the module docstring for the exit status."""
    keep: Path | None = args.keep
    if keep is not None and (keep.is_file() or (keep.is_dir() and any(keep.iterdir()))):
        print(f"auditlock demo: error: argument --keep: {keep} is not a new or empty directory", file=sys.stderr)
        return 2
    try:
        from auditlock.demo.run import run_demo  # noqa: PLC0415 - moto, boto3, duckdb only for the demo
    except ImportError as exc:
        print(f"auditlock demo needs the 'demo' extra: pip install 'auditlock[demo]', or run "
              f"`uv run auditlock demo` in a clone ({exc})", file=sys.stderr)
        return 1
    return run_demo(keep)
