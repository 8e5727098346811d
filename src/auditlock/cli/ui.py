"""`auditlock ui` (being built)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ui."""


def run(args: argparse.Namespace) -> int:
    """Not built yet."""
    print("auditlock ui: not built yet")
    return 2
