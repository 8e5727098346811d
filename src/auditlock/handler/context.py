"""Who is acting: the actor bound for the current thread / asyncio task (contextvars)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass

ACTOR_TYPES = ("user", "service", "job", "db")  # "db": a database role seen by `auditlock capture`


@dataclass(frozen=True)
class Actor:
    """An actor: `id` like `user:82`, `svc:billing-api` or `job:nightly-import`, its type and client address.

    `id` is None only for an anonymous request (ip and request id known, nobody authenticated): an event emitted
    then must name its actor itself (`actor_id=`), or it is refused.
    """

    id: str | None
    type: str
    ip: str | None = None
    run_id: str | None = None  # set for background jobs: written as payload.job_run_id
    request_id: str | None = None  # set inside a request: written as payload.request_id


class RequestScope:
    """The actor of one web request: one mutable holder, bound once by the request middleware.

    Every context copied from the request's — Starlette's thread pool (sync dependencies and endpoints,
    `run_in_threadpool`), asyncio tasks, threads started with `contextvars.copy_context().run` — shares this one
    object, so the actor set anywhere in the request (`set_request_actor`) is seen everywhere in it. A value set
    in a contextvar there would stay in the copy. `close()` at the end of the request: a copied context that
    outlives it then sees no request actor rather than a stale one.
    """

    __slots__ = ("actor", "is_open")

    def __init__(self, bound: Actor | None) -> None:
        self.actor = bound
        self.is_open = True

    def close(self) -> None:
        """End the request: nothing is bound through this scope any more."""
        self.is_open = False
        self.actor = None


_current_actor: ContextVar[Actor | None] = ContextVar("auditlock_actor", default=None)
_current_request: ContextVar[RequestScope | None] = ContextVar("auditlock_request", default=None)


def infer_actor_type(actor_id: str) -> str:
    """`svc:` ids are services, `job:` ids are jobs, `db:` ids database roles, anything else is a user."""
    if actor_id.startswith("db:"):
        return "db"
    if actor_id.startswith("svc:"):
        return "service"
    if actor_id.startswith("job:"):
        return "job"
    return "user"


@contextmanager
def actor(
    actor_id: str | None, *, type: str | None = None, ip: str | None = None, request_id: str | None = None
) -> Iterator[Actor]:
    """Bind the actor of every audit event emitted inside the block (nests; per thread and per task).

    Usable as a decorator too. `type` defaults from the id's prefix (`svc:` service, `job:` job, else user).
    `request_id` is written into every event as `payload.request_id`. An inner block keeps the enclosing
    request's `ip` and `request_id` unless it gives its own: the user who authenticated halfway through a
    request still acts from that request. `actor_id=None` binds an anonymous request: ip and request id only.
    """
    bound = inner_actor(actor_id, type=type, ip=ip, request_id=request_id)
    token = _current_actor.set(bound)
    try:
        yield bound
    finally:
        _current_actor.reset(token)


def inner_actor(
    actor_id: str | None, *, type: str | None = None, ip: str | None = None, request_id: str | None = None
) -> Actor:
    """The `Actor` that `actor(...)` binds here: the enclosing binding's ip and request id unless given."""
    if actor_id is not None and (not isinstance(actor_id, str) or not actor_id):
        raise ValueError(f"actor id {actor_id!r}: give a non-empty string like 'user:82', or None (anonymous)")
    outer = current_actor()
    if outer is not None:
        ip = outer.ip if ip is None else ip
        request_id = outer.request_id if request_id is None else request_id
    kind = type or (infer_actor_type(actor_id) if actor_id is not None else "user")
    return Actor(actor_id, kind, ip, None, request_id)


def current_actor() -> Actor | None:
    """The actor bound for the current context, if any: a `with` block's, else the current request's."""
    bound = _current_actor.get()
    if bound is not None:
        return bound
    scope = _current_request.get()
    return scope.actor if scope is not None else None


def current_request() -> RequestScope | None:
    """The scope of the request being served in this context, if it is still open."""
    scope = _current_request.get()
    return scope if scope is not None and scope.is_open else None


@contextmanager
def entered_request(scope: RequestScope) -> Iterator[RequestScope]:
    """Make `scope` the current request for the block; `with` bindings from outside the request do not apply."""
    request_token = _current_request.set(scope)
    actor_token = _current_actor.set(None)
    try:
        yield scope
    finally:
        _current_actor.reset(actor_token)
        _current_request.reset(request_token)


def bind(bound: Actor | None) -> Token[Actor | None]:
    """Bind `bound` as it is until `unbind(token)` — for integrations whose binding spans callbacks (a WSGI
    response iterable, Celery's task signals) where a `with` block cannot. Prefer `actor()` / `job()`."""
    return _current_actor.set(bound)


def unbind(token: Token[Actor | None]) -> None:
    """Undo the `bind` that returned `token` (in the same context it was made in)."""
    _current_actor.reset(token)


@contextmanager
def job(name: str, *, run_id: str | None = None) -> Iterator[Actor]:
    """Bind a named background job as the actor: `actor_id="job:<name>"`, `actor_type="job"`, and its run id
    (given, or a new UUIDv7 per run) in every event as `payload.job_run_id`.

    As a decorator, every call of the function is a run of its own. Closes the "system did it" hole: a job
    never acts anonymously.
    """
    if not name or name.startswith("job:") or any(c.isspace() for c in name):
        raise ValueError(f"job name {name!r}: give the bare name, e.g. 'nightly-import' (no 'job:', no spaces)")
    bound = Actor(f"job:{name}", "job", None, run_id or _new_run_id())
    token = _current_actor.set(bound)
    try:
        yield bound
    finally:
        _current_actor.reset(token)


def _new_run_id() -> str:
    from auditlock.spool.chain import uuid7_str  # noqa: PLC0415 - keeps this module free of spool imports

    return uuid7_str(time.time_ns())
