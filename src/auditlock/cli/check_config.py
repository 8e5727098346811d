"""`auditlock check-config PATH`: print OK or every problem; exit 1 on problems."""

from __future__ import annotations

import argparse

from auditlock.config import HmacConfig, load_config
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
        _warn_missing_hmac_keys(config.hmac)
    if config.erasure.store == "sql":
        try:
            config.erasure.load_dsn()
        except ConfigError as exc:
            print(f"warning: {error_text(exc)} (needed by the application, query, the view and the privacy "
                  "commands, not by the agent)")
    return 0


def _warn_missing_hmac_keys(hmac: HmacConfig) -> None:
    """Warn about each key of the ring not available here: the current one (applications and readers need it)
    and each older one (readers need it: `auditlock hash`, `query --hmac-field`)."""
    try:
        current_id, _ = hmac.load_current()
    except ConfigError as exc:
        print(f"warning: {error_text(exc)} (needed by the application and `auditlock hash`, not by the agent)")
        return
    older = [(f"[hmac.keys.{key_id}]", source) for key_id, source in sorted(hmac.keys.items()) if key_id != current_id]
    if current_id is not None and hmac.legacy is not None:
        older.append(("[hmac]", hmac.legacy))
    for where, source in older:
        try:
            source.load(where)
        except ConfigError as exc:
            print(f"warning: {error_text(exc)} (an older key: needed by `auditlock hash` and `query --hmac-field` "
                  "to find values hashed under it, not by the application or the agent)")
