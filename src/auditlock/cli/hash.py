"""`auditlock hash VALUE`: the hmac form of a value, to search the trail for a field stored hashed."""

from __future__ import annotations

import argparse
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.handler.encode import hmac_value
from auditlock.textsafe import error_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of hash."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("value", help="the value as the application passed it (numbers: their decimal text)")


def run(args: argparse.Namespace) -> int:
    """Print `hmac-sha256:<hex>` of VALUE under the config's [hmac] key; exit 1 if the key is unavailable."""
    try:
        key = load_config(args.config).hmac.load_key()
    except AuditlockError as exc:
        print(f"auditlock hash: {error_text(exc)}", file=sys.stderr)
        return 1
    print(hmac_value(key, args.value))
    return 0
