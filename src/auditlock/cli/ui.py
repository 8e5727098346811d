"""`auditlock ui`: the admin web view over the archive (extra `ui`); every search, export and view is audited.

`auditlock ui --hash-password` prints the argon2 hash of a password for `[ui.users]` (asked twice on a terminal,
else the first line of stdin) and exits.

Exit status: 0 after a clean stop, 1 when the configuration (e.g. no `[ui] auth`), the bind address or the
`ui` extra is not usable, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from pathlib import Path

from auditlock.config import load_config
from auditlock.errors import AuditlockError
from auditlock.textsafe import error_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ui."""
    parser.add_argument("--config", help="config file (default: $AUDITLOCK_CONFIG, else ./auditlock.toml)")
    parser.add_argument("--host", help="address to listen on (default: [ui] host, else 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: [ui] port, else 8080)")
    parser.add_argument("--cache-dir", type=Path,
                        help="where downloaded objects are kept (default: [ui] cache_dir, else [query] cache_dir, "
                             "else $XDG_CACHE_HOME/auditlock)")
    parser.add_argument("--hash-password", action="store_true",
                        help="print the argon2 hash of a password (from the terminal or stdin) for [ui.users]")


def run(args: argparse.Namespace) -> int:
    """Serve the view, or hash a password; see the module docstring for the exit status."""
    try:
        from auditlock.ui.auth import hash_password  # noqa: PLC0415 - the ui extra only when asked for
        from auditlock.ui.server import serve  # noqa: PLC0415
    except ImportError as exc:
        print(f"auditlock ui needs the 'ui' extra: pip install 'auditlock[ui]' ({exc})", file=sys.stderr)
        return 1
    if args.hash_password:
        password = _read_password()
        if not password:
            print("auditlock ui: error: the password is empty (or the two entries differ)", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config)
        serve(config, host=args.host or config.ui.host, port=config.ui.port if args.port is None else args.port,
              cache_dir=args.cache_dir)
    except AuditlockError as exc:
        print(f"auditlock ui: {error_text(exc)}", file=sys.stderr)
        return 1
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    return first if getpass.getpass("Repeat: ") == first else ""
