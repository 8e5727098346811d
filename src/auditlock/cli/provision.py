"""`auditlock provision` (being built)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of provision."""


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    print("auditlock provision: not built yet")
    return 2
