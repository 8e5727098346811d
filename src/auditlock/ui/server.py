"""Serving the view with uvicorn, and the one rule about where it may listen.

The view binds to 127.0.0.1 by default. On any other address it must serve TLS itself (`[ui] tls_cert_file` and
`tls_key_file`), or the config must say `allow_insecure_http = true` — for a TLS-terminating reverse proxy that
reaches the view over a private network — in which case a warning is logged at every start. Otherwise it
refuses to start: passwords, tokens and session cookies never cross a network in clear text by accident.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

from auditlock.config.model import Config, UiConfig
from auditlock.errors import ConfigError

log = logging.getLogger("auditlock.ui")


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (or `localhost`)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(ui: UiConfig, host: str) -> None:
    """Refuse a non-loopback bind without TLS unless `[ui] allow_insecure_http`; warn when it is allowed."""
    if is_loopback(host) or ui.tls_cert_file is not None:
        return
    if not ui.allow_insecure_http:
        raise ConfigError(f"[ui] host = {host!r} is not a loopback address and the view has no TLS: set "
                          "[ui] tls_cert_file and tls_key_file, bind to 127.0.0.1 behind a reverse proxy, or — "
                          "only if a TLS-terminating proxy reaches it over a private network — set "
                          "[ui] allow_insecure_http = true")
    log.warning("auditlock ui: WARNING: serving plain HTTP on %s (allow_insecure_http = true): credentials and "
                "audit data cross the network unencrypted unless a TLS proxy is the only client", host)


def serve(config: Config, *, host: str, port: int, cache_dir: Path | None = None) -> None:
    """Run the view until interrupted."""
    import uvicorn  # noqa: PLC0415 - only `auditlock ui` needs the server

    from auditlock.ui.app import build_app  # noqa: PLC0415

    check_bind(config.ui, host)
    app = build_app(config, cache_dir=cache_dir)
    tls = config.ui.tls_cert_file is not None
    log.warning("auditlock ui: serving %s://%s:%d%s/ (auth = %s)", "https" if tls else "http", host, port,
                config.ui.root_path, config.ui.auth)
    uvicorn.run(app, host=host, port=port, root_path=config.ui.root_path, proxy_headers=False, server_header=False,
                ssl_certfile=config.ui.tls_cert_file, ssl_keyfile=config.ui.tls_key_file, log_level="info")
