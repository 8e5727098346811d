"""Events wait for their transaction: written at COMMIT, `*_attempted` at ROLLBACK, nothing lost in between.

A change's event is *staged* on the connection it was made on (Django connections are per thread, so is the
stash). `started` is a change whose statement has not returned yet (pre_save / pre_delete / before a bulk
statement); `done` one whose statement returned: then `transaction.on_commit` holds its write, so it is written
when the outermost atomic block commits — at once in autocommit mode.

Django has no rollback signal, so `install()` wraps `BaseDatabaseWrapper.rollback` and `.savepoint_rollback`
(idempotently): after Django's own rollback, every staged event the rollback undid (all of them, or those staged
inside the savepoint) is written in its attempt form — `outcome` "rolled_back" for a `done` change, "failed" for a
`started` one (its statement raised). A `started` change left behind in autocommit mode (its statement failed
outside any atomic block: there is no rollback to see) is written as "failed" at the connection's next audited
change, when the request or management command finishes, or at the latest when the process exits. Events staged
with `attempt=False` (auth and permission events) are dropped on rollback: the change they describe never happened.
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from auditlock.handler.context import Actor, bind, current_actor, unbind
from auditlock.integrations.emit import emit_event
from auditlock.integrations.orm_events import ATTEMPT_OF

_STASH = "_auditlock_staged"
_INSTALLED = "_auditlock_rollback_hooks"
_staging: weakref.WeakSet[BaseDatabaseWrapper] = weakref.WeakSet()  # connections (of any thread) with a stash


@dataclass
class Staged:
    """One event waiting for its transaction."""

    event_type: str  # the success form, `<prefix>.<action>` (or a fixed type when attempt=False)
    fields: dict[str, Any]
    savepoints: frozenset[str]
    attempt: bool = True  # written as `<prefix>.<ATTEMPT_OF[action]>` on rollback; else dropped
    done: bool = False
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    # The actor as bound when the change was made: a request's scope is closed when the request ends, and a
    # transaction can end later (a test's, a job's), so the binding is kept as it was, not looked up at COMMIT.
    bound: Actor | None = field(default_factory=current_actor)


Writer = Callable[[str, dict[str, Any], "Staged"], None]
_write: Writer | None = None


def stage(alias: str, event_type: str, fields: dict[str, Any], *, attempt: bool = True) -> Staged:
    """Stage an event of a change about to be made on connection `alias` (`started`)."""
    connection = connections[alias]
    flush_stale(connection)
    staged = Staged(event_type, fields, frozenset(s for s in connection.savepoint_ids if s), attempt)
    _stash(connection).append(staged)
    return staged


def finish(alias: str, staged: Staged) -> None:
    """The change's statement returned: write the event when the transaction commits (now, in autocommit)."""
    staged.done = True
    transaction.on_commit(functools.partial(_committed, alias, staged), using=alias)


def discard(alias: str, staged: Staged) -> None:
    """Forget a staged event (its change turned out to change nothing)."""
    stash = _stash(connections[alias])
    if staged in stash:
        stash.remove(staged)


def fail(alias: str, staged: Staged, error: BaseException) -> None:
    """The change's statement raised. Outside a transaction nothing will roll back: write the attempt now."""
    connection = connections[alias]
    staged.fields.setdefault("payload", {})["error"] = type(error).__name__
    if not connection.in_atomic_block:
        discard(alias, staged)
        _write_attempt(staged, "failed")


def flush_stale(connection: BaseDatabaseWrapper) -> None:
    """Write, as failed attempts, `started` events left on a connection that is in no transaction."""
    if connection.in_atomic_block:
        return
    stash = _stash(connection)
    stale = [s for s in stash if not s.done]
    for staged in stale:
        stash.remove(staged)
        _write_attempt(staged, "failed")


def flush_all_stale(**_: Any) -> None:
    """`request_finished`: `flush_stale` on every connection this thread opened."""
    for connection in connections.all(initialized_only=True):
        flush_stale(connection)


def flush_every_thread() -> None:
    """At the end of a management command and of the process: `flush_stale` on every connection that staged an
    event, in any thread — a failed statement that nothing audited followed is written, not lost at exit."""
    for connection in list(_staging):
        flush_stale(connection)


def install(write: Writer) -> None:
    """Set how events are written, and hook Django's rollbacks (once per process)."""
    global _write  # noqa: PLW0603 - one writer per process, set at ready()
    _write = write
    if getattr(BaseDatabaseWrapper, _INSTALLED, False):
        return
    atexit.register(flush_every_thread)  # after the audit handler's own exit hook was registered: runs before it
    original_rollback = BaseDatabaseWrapper.rollback
    original_savepoint_rollback = BaseDatabaseWrapper.savepoint_rollback

    @functools.wraps(original_rollback)
    def rollback(self: BaseDatabaseWrapper) -> None:
        original_rollback(self)
        _rolled_back(self, None)

    @functools.wraps(original_savepoint_rollback)
    def savepoint_rollback(self: BaseDatabaseWrapper, sid: str) -> None:
        original_savepoint_rollback(self, sid)
        _rolled_back(self, sid)

    BaseDatabaseWrapper.rollback = rollback
    BaseDatabaseWrapper.savepoint_rollback = savepoint_rollback
    setattr(BaseDatabaseWrapper, _INSTALLED, True)


def _rolled_back(connection: BaseDatabaseWrapper, sid: str | None) -> None:
    stash = _stash(connection)
    undone = [s for s in stash if sid is None or sid in s.savepoints]
    for staged in undone:
        stash.remove(staged)
    for staged in undone:
        if staged.attempt:
            _write_attempt(staged, "rolled_back" if staged.done else "failed")


def _committed(alias: str, staged: Staged) -> None:
    discard(alias, staged)
    _writer()(staged.event_type, staged.fields, staged)


def _write_attempt(staged: Staged, outcome: str) -> None:
    prefix, _, action = staged.event_type.rpartition(".")
    fields = {**staged.fields, "payload": {**staged.fields.get("payload", {}), "outcome": outcome}}
    _writer()(f"{prefix}.{ATTEMPT_OF[action]}", fields, staged)


def _stash(connection: BaseDatabaseWrapper) -> list[Staged]:
    stash: list[Staged] | None = getattr(connection, _STASH, None)
    if stash is None:
        stash = []
        setattr(connection, _STASH, stash)
        _staging.add(connection)
    return stash


def _writer() -> Writer:
    if _write is None:
        raise RuntimeError("auditlock.integrations.django: transactions.install() was not called")
    return _write


def write_through(logger: Any) -> Writer:
    """A writer emitting on `logger` in the change's own context (its trace) with the actor bound when the change
    was made (its job run, request id and address)."""
    def emit_as_bound(event_type: str, fields: dict[str, Any], bound: Actor | None) -> None:
        token = bind(bound)
        try:
            emit_event(logger, event_type, **fields)
        finally:
            unbind(token)

    def write(event_type: str, fields: dict[str, Any], staged: Staged) -> None:
        staged.context.run(emit_as_bound, event_type, fields, staged.bound)
    return write
