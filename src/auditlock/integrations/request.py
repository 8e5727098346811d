"""What a web request says about its client — address and request id — and the binding both middlewares make.

Shared by `integrations.asgi` and `integrations.wsgi`; framework-free.

Client address. The peer of the connection is the client, unless the peer is a trusted proxy: then
`X-Forwarded-For` is read right to left (the right end was appended by the proxy nearest to us), skipping every
hop inside `trusted_proxies`; the first address outside them is the client — the algorithm of uvicorn's
`ProxyHeadersMiddleware` and of werkzeug's `ProxyFix`. Everything left of that hop was written by the client and
is never believed. If every hop is trusted, the leftmost is the client. A hop that is not an IP address ends the
walk with an unknown address (None) rather than a guess; a result is always a valid IP address or None.

Request id. The incoming header (`X-Request-ID`) is used when it is sane — 1 to 128 characters of
`A-Z a-z 0-9 - _ . : + = / @` — and came from a trusted proxy (or `request_id_from_any_peer=True`): a client
cannot choose the id its requests are filed under. Otherwise a new UUIDv7.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from auditlock.handler.context import Actor, RequestScope, current_request, entered_request, infer_actor_type

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
UNIX_SOCKET = "unix"  # in trusted_proxies: trust a peer without an address (a Unix socket, e.g. nginx → gunicorn)
MAX_HOPS = 64  # X-Forwarded-For entries looked at, from the right

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/@-]{1,128}")


class ProxyTrust:
    """Which peers may tell us the client address (`X-Forwarded-For`) and the request id."""

    def __init__(self, trusted_proxies: Iterable[str | IPNetwork] = DEFAULT_TRUSTED_PROXIES) -> None:
        entries = [trusted_proxies] if isinstance(trusted_proxies, str) else list(trusted_proxies)
        self.unix_socket = UNIX_SOCKET in entries
        self.networks = tuple(_network(entry) for entry in entries if entry != UNIX_SOCKET)

    def is_trusted(self, address: IPAddress | None) -> bool:
        """Whether a peer (None: no address, a Unix socket) is a trusted proxy."""
        if address is None:
            return self.unix_socket
        return any(address in network for network in self.networks)

    def peer_is_trusted(self, peer: str | None) -> bool:
        """`is_trusted` for the peer as the server reports it (text, maybe empty or not an address)."""
        if not peer:
            return self.unix_socket
        address = parse_ip(peer)
        return address is not None and self.is_trusted(address)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer, or from `X-Forwarded-For` when the peer is a trusted proxy."""
        address = parse_ip(peer) if peer else None
        if peer and address is None:
            return None  # a peer that is not an address ("testclient") is neither trusted nor reported
        if not forwarded_for or not self.is_trusted(address):
            return None if address is None else str(address)
        return self._forwarded_client(forwarded_for)

    def _forwarded_client(self, forwarded_for: str) -> str | None:
        hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_HOPS:]
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                return None  # a malformed hop: the client is unknown, and guessing would be worse
            if not self.is_trusted(address):
                return str(address)
        return str(address)  # every hop is trusted: the leftmost is the client


def parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or an `X-Forwarded-For` hop (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `::1`), or None.

    IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets report IPv4 peers) become IPv4, and a
    zone (`%eth0`) is dropped, so trust and the written address do not depend on how the socket was opened.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    text = text.partition("%")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_sane_request_id(value: str) -> bool:
    """Whether an incoming request id is short and of a safe character set."""
    return _SANE_REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A fresh request id: a UUIDv7, so ids sort by time."""
    from auditlock.spool.chain import uuid7_str  # noqa: PLC0415 - the handler's import graph stays as it is

    return uuid7_str(time.time_ns())


class RequestBinder:
    """What both middlewares decide per request: the client address, the request id and the actor to bind."""

    def __init__(
        self,
        *,
        trusted_proxies: Iterable[str | IPNetwork],
        request_id_header: str | None,
        request_id_from_any_peer: bool,
        anonymous_actor: str | None,
        echo_request_id: bool = True,
    ) -> None:
        self.trust = ProxyTrust(trusted_proxies)
        self.request_id_header = request_id_header.lower() if request_id_header else None
        # The response carries the request id under the same header, so a user reporting a problem can quote it
        # and an auditor find that request's events (`payload.request_id`).
        self.response_header = self.request_id_header if echo_request_id else None
        self._request_id_from_any_peer = request_id_from_any_peer
        self._anonymous_actor = anonymous_actor

    def request_actor(self, actor_id: object, peer: str | None, header: Callable[[str], str | None]) -> Actor:
        """The binding for one request; `header(name)` returns a request header (lower-case name) or None."""
        ip = self.trust.client_ip(peer, header("x-forwarded-for"))
        request_id = self._request_id(peer, header)
        if actor_id is None:
            actor_id = self._anonymous_actor
        elif not isinstance(actor_id, str) or not actor_id:
            raise TypeError(
                f"the actor callable returned {actor_id!r}: return an actor id like 'user:82', or None for an "
                "anonymous request"
            )
        kind = infer_actor_type(actor_id) if actor_id is not None else "user"
        return Actor(actor_id, kind, ip, None, request_id)

    def _request_id(self, peer: str | None, header: Callable[[str], str | None]) -> str:
        incoming = header(self.request_id_header) if self.request_id_header else None
        if incoming is None or not is_sane_request_id(incoming):
            return new_request_id()
        if self._request_id_from_any_peer or self.trust.peer_is_trusted(peer):
            return incoming
        return new_request_id()


@contextmanager
def request_binding(bound: Actor | None) -> Iterator[RequestScope]:
    """Open a request's scope with `bound` as its actor for the block (`set_request_actor` changes it); the
    scope is closed when the block ends."""
    scope = RequestScope(bound)
    try:
        with entered_request(scope):
            yield scope
    finally:
        scope.close()


def set_request_actor(actor_id: str, *, type: str | None = None) -> Actor:
    """Set the actor for the rest of the current request, keeping its ip and request id.

    For frameworks that authenticate in a hook rather than around the view — Flask's `before_request`, a Django
    middleware after `AuthenticationMiddleware`, a FastAPI dependency (sync or async) — where a
    `with auditlock.actor(...)` block cannot span the request (and a streamed body). It changes the request's
    scope, not the calling context, so it works from any thread or task of the request: Starlette's thread pool,
    `run_in_threadpool`, asyncio tasks, threads started with `contextvars.copy_context().run`. A
    `with auditlock.actor(...)` block inside the request still wins within its block. Only inside
    `AuditMiddleware` (ASGI or WSGI), whose request ends the binding; elsewhere it raises `RuntimeError`.
    """
    scope = current_request()
    if scope is None:
        raise RuntimeError(
            "set_request_actor() outside a request bound by auditlock's AuditMiddleware: add the middleware, "
            "or use `with auditlock.actor(...)`; a thread you start in a request sees the request only if it "
            "runs in a copy of its context (`contextvars.copy_context().run`)"
        )
    if not isinstance(actor_id, str) or not actor_id:
        raise ValueError(f"actor id {actor_id!r}: give a non-empty string like 'user:82'")
    request = scope.actor
    kind = type or infer_actor_type(actor_id)
    bound = Actor(actor_id, kind, request.ip if request else None, None, request.request_id if request else None)
    scope.actor = bound
    return bound


def _network(entry: str | IPNetwork) -> IPNetwork:
    if not isinstance(entry, str):
        return entry
    try:
        return ipaddress.ip_network(entry)
    except ValueError as exc:
        raise ValueError(
            f"trusted_proxies entry {entry!r}: {exc} (give networks like '10.0.0.0/8', addresses, or 'unix')"
        ) from None
