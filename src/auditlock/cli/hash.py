"""`auditlock hash VALUE`: the hmac forms of a value, to search the trail for a field stored hashed.

One line per key of the `[hmac]` keyring, the current key's first: a value written before a key rotation holds
the form of an older key. `--current` prints only the form new events get.
"""

from __future__ import annotations

import argparse
import sys

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.handler.hmac_keys import HmacKeyring
from auditlock.textsafe import error_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of hash."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--current", action="store_true",
                        help="print only the form under the current key (what new events hold)")
    parser.add_argument("value", help="the value as the application passed it (numbers: their decimal text)")


def run(args: argparse.Namespace) -> int:
    """Print `hmac-sha256:[<key id>:]<hex>` of VALUE under each key; exit 1 if a key is unavailable."""
    try:
        hmac_config = load_config(args.config).hmac
        keyring = HmacKeyring.load_current(hmac_config) if args.current else HmacKeyring.load(hmac_config)
    except AuditlockError as exc:
        print(f"auditlock hash: {error_text(exc)}", file=sys.stderr)
        return 1
    for form in keyring.candidates(args.value):
        print(form)
    return 0
