"""`auditlock check-config PATH`: print OK or every problem; exit 1 on problems."""

from __future__ import annotations

import argparse

from auditlock.config import load_config
from auditlock.errors import ConfigError
from auditlock.textsafe import error_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of check-config."""
    parser.add_argument("path", nargs="?", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")


def run(args: argparse.Namespace) -> int:
    """Validate the file; also warn when a configured hmac key or key store URL is not available here."""
    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(f"auditlock: {error_text(exc)}")
        return 1
    print(f"OK: {config.source} (service {config.service!r}, {len(config.targets)} targets, "
          f"{len(config.retention.classes)} retention classes)")
    if config.hmac.configured:
        try:
            config.hmac.load_key()
        except ConfigError as exc:
            print(f"warning: {error_text(exc)} (needed by the application and `auditlock hash`, not by the agent)")
    if config.erasure.store == "sql":
        try:
            config.erasure.load_dsn()
        except ConfigError as exc:
            print(f"warning: {error_text(exc)} (needed by the application, query, the view and the privacy "
                  "commands, not by the agent)")
    return 0
