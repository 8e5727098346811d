"""`auditlock lifecycle` (being built)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of lifecycle."""


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    print("auditlock lifecycle: not built yet")
    return 2
