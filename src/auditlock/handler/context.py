"""Who is acting: the actor bound for the current thread / asyncio task (contextvars)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

ACTOR_TYPES = ("user", "service", "job")


@dataclass(frozen=True)
class Actor:
    """An actor: `id` like `user#82`, `svc:billing-api` or `job:nightly-import`, its type and client address."""

    id: str
    type: str
    ip: str | None = None
    run_id: str | None = None  # set for background jobs: written as payload.job_run_id


_current_actor: ContextVar[Actor | None] = ContextVar("auditlock_actor", default=None)


def infer_actor_type(actor_id: str) -> str:
    """`svc:` ids are services, `job:` ids are jobs, anything else is a user."""
    if actor_id.startswith("svc:"):
        return "service"
    if actor_id.startswith("job:"):
        return "job"
    return "user"


@contextmanager
def actor(actor_id: str, *, type: str | None = None, ip: str | None = None) -> Iterator[Actor]:
    """Bind the actor of every audit event emitted inside the block (nests; per thread and per task).

    Usable as a decorator too. `type` defaults from the id's prefix (`svc:` service, `job:` job, else user).
    """
    bound = Actor(actor_id, type or infer_actor_type(actor_id), ip)
    token = _current_actor.set(bound)
    try:
        yield bound
    finally:
        _current_actor.reset(token)


def current_actor() -> Actor | None:
    """The actor bound for the current context, if any."""
    return _current_actor.get()


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
