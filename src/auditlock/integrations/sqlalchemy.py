"""Audit events from SQLAlchemy 2.x ORM sessions, written when the transaction commits (`auditlock[sqlalchemy]`).

    from auditlock.integrations.sqlalchemy import track

    tracker = track(SessionLocal, logger=audit_log, models=(Order, Customer))  # or {Order: "Order", ...}
    ...
    tracker.untrack()

`SessionLocal` may also be an `async_sessionmaker`, an `AsyncSession` or the `AsyncSession` class: the listeners
go on the synchronous Session behind it, where SQLAlchemy runs the ORM work and its events.

Per object and flush: `<prefix>.created` / `.updated` / `.deleted`, with `payload.changes` of the allowlisted
columns. Per bulk INSERT / UPDATE / DELETE run through `session.execute`: `<prefix>.bulk_created` /
`.bulk_updated` / `.bulk_deleted` with the WHERE clause (parameter names, never values), the written column names,
the row count and — for UPDATE / DELETE where the database has RETURNING — the affected rows' primary keys
(`sqlalchemy_bulk`). The prefix is the target type in snake case (`OrderLine` -> `order_line`), overridable per
model. A transaction or savepoint that rolls back, or a flush or statement that fails, leaves
`<prefix>.<verb>_attempted` events instead (`payload.outcome` "rolled_back" or "failed", `payload.error` the
exception's class name). The contract — what is and is not captured, failures after commit — is
docs/integrations-sqlalchemy.md.

How a session is followed. Events are stashed per *scope*: the root transaction or a savepoint. `before_flush`
snapshots the flush's changes (so a failing flush still leaves attempts) and reads old values the session does not
hold; `after_flush` re-collects them with the primary keys now known and stashes them; `do_orm_execute` runs a bulk
statement and stashes its description with the row count and ids. A committed savepoint hands its events to its parent
scope; the root's are emitted in `after_transaction_end` right after `after_commit` — after the database
commit, and after SQLAlchemy has finished its own bookkeeping, so a `SpoolError` raised there leaves a usable
session. Events are emitted in the context (actor, job run id, trace) of the flush or statement that caused them.

A change that commits always has its event. Whatever would make the write after COMMIT refuse an event by design
(no attributable actor — an anonymous request —, anything else the writing core's `build()` refuses, an event
over `max_event_bytes`, a route that would drop it) is asked in `before_flush` and before a bulk statement runs
(`sqlalchemy_check.EventCheck`), raising `EventError` before anything is sent to the database; `after_flush` asks
again on the final events, failing the flush so its transaction cannot commit. Only the spool write itself can
still fail after COMMIT (docs/integrations-sqlalchemy.md).

asyncio. An `AsyncSession` proxies a sync `Session` (`AsyncSession.sync_session`) and runs each of its methods in
a greenlet on the event loop's thread; the greenlet shares the awaiting task's contextvars, so the actor bound in
the coroutine is the flush's. The listeners therefore run, and emit (a blocking spool write), on the event loop
thread, inside `await session.commit()` / `rollback()` / `close()`.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Result
from sqlalchemy.exc import NoInspectionAvailable
from sqlalchemy.orm import (
    InstanceState,
    ORMExecuteState,
    Session,
    SessionTransaction,
    UOWTransaction,
)

from auditlock.config.model import Config
from auditlock.errors import ConfigError, EventError, SpoolError
from auditlock.handler import event_types
from auditlock.handler.context import current_actor
from auditlock.integrations.emit import AuditLogger, emit_event
from auditlock.integrations.orm_events import (
    ATTEMPT_OF,
    SUCCESS_ACTIONS,
    allow_integration_fields,
    default_event_prefix,
    emitted_event_types,
    fit_ids,
)
from auditlock.integrations.sqlalchemy_async import sync_event_target
from auditlock.integrations.sqlalchemy_bulk import (
    KeyPlan,
    bulk_action,
    describe_statement,
    plan_keys,
    returned_ids,
    rowcount_of,
    statement_model,
)
from auditlock.integrations.sqlalchemy_capture import (
    PendingEvent,
    TrackedModel,
    flush_changes,
    load_unknown_before,
)
from auditlock.integrations.sqlalchemy_check import EventCheck

__all__ = ["ATTEMPT_OF", "SUCCESS_ACTIONS", "SessionTracker", "default_event_prefix", "sync_event_target", "track"]

WIDEST_ROWCOUNT = 2**63 - 1  # a bulk event's row count as checked before the statement runs


def track(
    session_or_factory: Any,
    *,
    logger: AuditLogger,
    models: Iterable[type[Any]] | Mapping[type[Any], str],
    event_prefixes: Mapping[type[Any], str] | None = None,
    config: Config | None = None,
    capture: str = "session",
) -> SessionTracker:
    """Audit the ORM changes and bulk statements of `models` in a Session, sessionmaker, scoped_session or the
    Session class (every session), emitting through `logger` after commit; returns a handle with `untrack()`.

    The asyncio forms are accepted too, through the sync Session SQLAlchemy runs behind them (see
    `sync_event_target`): an `AsyncSession`, an `async_sessionmaker`, an `async_scoped_session`, or the
    `AsyncSession` class (or a subclass: every session of its `sync_session_class`).

    `models` lists mapped classes (target type = class name) or maps each to its target type name. The columns
    read are the target's `[targets.<Type>] fields` and `hmac`, taken from `config` — by default the config of
    the `AuditHandler` / `AuditProcessor` behind `logger`. `event_prefixes` overrides the event type prefix of a
    model (default: `default_event_prefix(target_type)`). Raises `ConfigError` when a target has no
    `[targets.<Type>]` section or an event type the integration emits does not match `[events] include`.

    `capture="wal"`: `auditlock capture` records the rows from the database's WAL; the session then only binds the
    actor into each transaction (`integrations.postgres.bind_session_transactions`) and records nothing itself, so
    no change is recorded twice. The returned handle's `untrack()` removes that binding.
    """
    if capture not in ("session", "wal"):
        raise ConfigError(f"track(capture={capture!r}): use \"session\" (record at commit) or \"wal\" "
                          "(auditlock capture records; the session binds the actor)")
    check = EventCheck(logger, config)
    config = config if config is not None else check.config
    prefixes = dict(event_prefixes or {})
    named = models.items() if isinstance(models, Mapping) else ((cls, cls.__name__) for cls in models)
    tracked: dict[type[Any], TrackedModel] = {}
    problems: list[str] = []
    for cls, target_type in named:
        model = _tracked_model(cls, target_type, prefixes.pop(cls, None), config, problems)
        if model is not None:
            tracked[cls] = model
    problems += [f"event_prefixes names {cls!r}, which is not in models" for cls in prefixes]
    if problems:
        raise ConfigError(problems, source="auditlock.integrations.sqlalchemy.track")
    if capture == "wal":
        from auditlock.integrations.postgres import bind_session_transactions  # noqa: PLC0415

        return bind_session_transactions(sync_event_target(session_or_factory))  # type: ignore[no-any-return]
    for model in tracked.values():
        allow_integration_fields(model.prefix)
    return SessionTracker(sync_event_target(session_or_factory), logger, tracked, check=check)


def _tracked_model(cls: type[Any], target_type: str, prefix: str | None, config: Config,
                   problems: list[str]) -> TrackedModel | None:
    try:
        mapper = sa_inspect(cls)
    except NoInspectionAvailable:
        problems.append(f"models: {cls!r} is not a mapped class")
        return None
    prefix = prefix or default_event_prefix(target_type)
    emitted = emitted_event_types(prefix)
    if not all(event_types.EVENT_TYPE_PATTERN.match(event_type) for event_type in emitted):
        problems.append(f"event prefix {prefix!r} of {cls.__name__} must be lowercase like 'order'")
        return None
    unmatched = [event_type for event_type in emitted if not config.events.matches(event_type)]
    if unmatched:
        problems.append(f"[events] include does not match {len(unmatched)} event types of {cls.__name__} "
                        f"({', '.join(unmatched[:3])}{', …' if len(unmatched) > 3 else ''}): add '{prefix}.*'")
    target = config.targets.get(target_type)
    if target is None:
        problems.append(f"[targets.{target_type}] is missing: add it with the `fields` allowlist of {cls.__name__} "
                        "(an empty list records ids only)")
        return None
    columns = frozenset(prop.key for prop in mapper.column_attrs)
    return TrackedModel(target_type, prefix, target.allowed & columns, mapper)


@dataclass
class _SessionLog:
    """One session's pending events, per scope (root transaction or savepoint)."""

    stashed: dict[SessionTransaction, list[PendingEvent]] = field(default_factory=dict)
    inflight: list[PendingEvent] = field(default_factory=list)
    loaded: dict[InstanceState[Any], dict[str, Any]] = field(default_factory=dict)
    committed: set[SessionTransaction] = field(default_factory=set)

    def stash(self, scope: SessionTransaction, events: list[PendingEvent]) -> None:
        """Keep events until `scope` ends."""
        self.stashed.setdefault(scope, []).extend(events)


class SessionTracker:
    """The listeners of one `track()` call; `untrack()` removes them (pending events are then not emitted)."""

    def __init__(self, target: Any, logger: AuditLogger, models: Mapping[type[Any], TrackedModel], *,
                 check: EventCheck | None = None) -> None:
        self._target = target
        self._logger = logger
        self._check = check or EventCheck(logger)
        self._models = dict(models)
        self._tables = {model.mapper.local_table: model for model in self._models.values()}
        self._lookup: dict[type[Any], TrackedModel | None] = {}
        self._info_key = f"auditlock.sqlalchemy.{uuid.uuid4().hex}"
        self._listeners: list[tuple[str, Callable[..., Any]]] = [
            ("before_flush", self._before_flush), ("after_flush", self._after_flush),
            ("do_orm_execute", self._do_orm_execute), ("after_commit", self._after_commit),
            ("after_soft_rollback", self._after_soft_rollback),
            ("after_transaction_end", self._after_transaction_end),
        ]
        for name, listener in self._listeners:
            event.listen(target, name, listener)
        self._tracking = True

    @property
    def models(self) -> Mapping[type[Any], TrackedModel]:
        """The tracked classes and how each is audited."""
        return self._models

    def untrack(self) -> None:
        """Remove the listeners; safe to call twice."""
        if self._tracking:
            self._tracking = False
            for name, listener in self._listeners:
                event.remove(self._target, name, listener)

    def __enter__(self) -> SessionTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.untrack()

    # -- listeners ------------------------------------------------------------------------------------------

    def _before_flush(self, session: Session, _flush_context: UOWTransaction, _instances: object) -> None:
        loaded = load_unknown_before(session, self._model_of)
        events = flush_changes(session, self._model_of, loaded)
        self._refuse_unwritable(events, "not sent to the database")
        log = self._log(session)
        log.loaded, log.inflight = loaded, events

    def _after_flush(self, session: Session, _flush_context: UOWTransaction) -> None:
        log = self._log(session)
        events = flush_changes(session, self._model_of, log.loaded)
        # Asked again on the final events (keys assigned, other before_flush listeners done): raising here fails
        # the flush, so its transaction cannot commit.
        self._refuse_unwritable(events, "the flush is rolled back")
        log.loaded, log.inflight = {}, []
        if events:
            log.stash(_scope(session), events)

    def _do_orm_execute(self, state: ORMExecuteState) -> Result[Any] | None:
        action = bulk_action(state)
        model = statement_model(state, self._model_of, self._tables) if action is not None else None
        if action is None or model is None:
            return None
        pending = PendingEvent(model, action, None, payload=describe_statement(state, model, action))
        keys = plan_keys(state, model, action)
        # Checked with the fields still unknown at their widest: the row count, and no ids yet.
        probe = {"rowcount": WIDEST_ROWCOUNT, **(keys.placeholder() if keys is not None else {})}
        self._refuse_unwritable([replace(pending, payload={**pending.payload, **probe})], "not sent to the database")
        try:
            result = state.invoke_statement(statement=keys.statement if keys is not None else None)
        except Exception as exc:
            self._emit(pending_events=[pending], outcome="failed", error=type(exc).__name__)
            raise
        pending.payload["rowcount"] = rowcount_of(result, state, action)
        if keys is not None:
            self._record_ids(pending, keys, result)
        self._log(state.session).stash(_scope(state.session), [pending])
        return result

    def _record_ids(self, pending: PendingEvent, keys: KeyPlan, result: Result[Any]) -> None:
        ids = returned_ids(result, pending.model) if keys.unknown is None else None
        if ids is None:
            pending.payload.update(ids=None, ids_unknown=keys.unknown or "not_returned")
        else:
            fit_ids(pending.payload, ids, lambda: self._accepted(pending))

    def _after_commit(self, session: Session) -> None:
        log = session.info.get(self._info_key)
        if log is not None:
            log.committed.add(_scope(session))  # the root, or the savepoint being released

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        log = session.info.get(self._info_key)
        if log is None:
            return
        committed = transaction in log.committed
        log.committed.discard(transaction)
        if transaction.parent is None:
            log.inflight, log.loaded = [], {}
        events = log.stashed.pop(transaction, None)
        if not events:
            return
        if committed and transaction.parent is not None:
            log.stash(_scope_of(transaction.parent), events)  # a released savepoint: its parent decides
        elif committed:
            self._emit(events)
        else:
            self._emit(events, outcome="rolled_back")  # rolled back, or closed without commit

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        log = session.info.get(self._info_key)
        if log is None:
            return
        # A rollback of the flush's own subtransaction is a failed flush; users cannot create subtransactions.
        failed_flush = previous.parent is not None and not previous.nested
        inflight, log.inflight, log.loaded = log.inflight, [], {}
        rolled_back = [scope for scope in log.stashed if not scope.is_active]
        events = [pending for scope in rolled_back for pending in log.stashed.pop(scope)]
        if events:
            self._emit(events, outcome="rolled_back")
        if failed_flush and inflight:
            error = sys.exception()
            self._emit(inflight, outcome="failed", error=type(error).__name__ if error is not None else None)

    # -- helpers --------------------------------------------------------------------------------------------

    def _accepted(self, pending: PendingEvent) -> bool:
        try:
            self._check.check(*_event_of(pending, None, None))
        except EventError:
            return False
        return True

    def _refuse_unwritable(self, pending_events: list[PendingEvent], consequence: str) -> None:
        """Raise `EventError` if the write after COMMIT would refuse one of these events (see sqlalchemy_check)."""
        for pending in pending_events:
            event_type, fields = _event_of(pending, None, None)
            try:
                self._check.check(event_type, fields)
            except EventError as exc:
                raise EventError(
                    f"{pending.model.target_type} {pending.action.replace('_', ' ')}: {consequence}, because its "
                    f"audit event would be refused after the commit — {exc}{_anonymous_hint()}"
                ) from exc

    def _model_of(self, cls: type[Any]) -> TrackedModel | None:
        if cls not in self._lookup:
            self._lookup[cls] = next((self._models[base] for base in cls.__mro__ if base in self._models), None)
        return self._lookup[cls]

    def _log(self, session: Session) -> _SessionLog:
        log: _SessionLog | None = session.info.get(self._info_key)
        if log is None:
            log = session.info[self._info_key] = _SessionLog()
        return log

    def _emit(self, pending_events: list[PendingEvent], outcome: str | None = None, error: str | None = None) -> None:
        """Emit every event, then raise the first failure with a note naming all events not written."""
        failures: list[tuple[str, PendingEvent, SpoolError | EventError]] = []
        for pending in pending_events:
            event_type, fields = _event_of(pending, outcome, error)
            try:
                pending.context.run(emit_event, self._logger, event_type, **fields)
            except (SpoolError, EventError) as exc:
                failures.append((event_type, pending, exc))
        if failures:
            first = failures[0][2]
            state = "was COMMITTED" if outcome is None else "was rolled back or failed"
            lost = ", ".join(f"{kind} {p.model.target_type}#{p.target_id or '-'}" for kind, p, _exc in failures)
            first.add_note(f"auditlock.integrations.sqlalchemy: the database transaction {state}; "
                           f"{len(failures)} of its audit events were not written: {lost}")
            raise first


def _event_of(pending: PendingEvent, outcome: str | None, error: str | None) -> tuple[str, dict[str, Any]]:
    action = pending.action if outcome is None else ATTEMPT_OF[pending.action]
    payload = dict(pending.payload)
    if outcome is not None:
        payload["outcome"] = outcome
    if error is not None:
        payload["error"] = error
    fields: dict[str, Any] = {"target_type": pending.model.target_type, "target_id": pending.target_id,
                              "payload": payload}
    if pending.before is not None:
        fields["before"] = pending.before
    if pending.after is not None:
        fields["after"] = pending.after
    return f"{pending.model.prefix}.{action}", fields


def _anonymous_hint() -> str:
    bound = current_actor()
    if bound is None or bound.id is not None:
        return ""
    return ("; in a web request, bind the authenticated user first (set_request_actor() where the request is "
            "authenticated), or give AuditMiddleware anonymous_actor= to file such changes under that id")


def _scope(session: Session) -> SessionTransaction:
    """The innermost savepoint, else the root transaction: where new events wait."""
    scope = session.get_nested_transaction() or session.get_transaction()
    if scope is None:
        raise RuntimeError("auditlock.integrations.sqlalchemy: a flush or statement ran outside a transaction")
    return scope


def _scope_of(transaction: SessionTransaction) -> SessionTransaction:
    while transaction.parent is not None and not transaction.nested:
        transaction = transaction.parent
    return transaction
