"""Who made a change, written into the change's own transaction — for `auditlock capture` (WAL capture).

    from auditlock.integrations.postgres import bind_transaction

    with conn.transaction():
        bind_transaction(conn)          # the actor bound now (auditlock.actor / request / job) goes into the WAL
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 7")

`bind_transaction` calls `auditlock_capture.bind_actor(actor_id, actor_type, actor_ip, request_id, job_run_id)`,
which `auditlock capture --setup` creates (SECURITY DEFINER, EXECUTE granted to the roles of `[capture] app_roles`
only): it emits one transactional logical decoding message (`auditlock.actor`) with the bound actor id and type,
client address, request id and job run id, and the database role that bound them (`session_user`, added by the
function). It commits — or rolls back — atomically with the rows, so no window is left between COMMIT and the
spool: capture attributes every later row change of the transaction to that actor (`capture.attribution`). Without
a bound actor nothing is emitted and capture attributes the rows to the database session (`actor_type = "db"`). A
role not granted the function gets PostgreSQL's "permission denied for function bind_actor" (add it to
`[capture] app_roles` and run `--setup` again); the transaction is then aborted, so nothing is written unattributed.

Accepts a psycopg 3 or psycopg2 connection, a SQLAlchemy `Connection` or `Session` (sync). With the SQLAlchemy ORM,
`track(..., capture="wal")` calls it at the start of every session transaction, and again before a flush or a
write statement whenever the actor bound then differs, instead of recording events itself, so a change is never
recorded twice (docs/capture-postgres.md). Importing this module imports no driver.
"""

from __future__ import annotations

import weakref
from typing import Any

from auditlock.errors import EventError
from auditlock.handler.context import current_actor

_BIND = "SELECT auditlock_capture.bind_actor(%s, %s, %s, %s, %s)"
_BIND_NAMED = "SELECT auditlock_capture.bind_actor(:actor_id, :actor_type, :actor_ip, :request_id, :job_run_id)"
_ARGUMENTS = ("actor_id", "actor_type", "actor_ip", "request_id", "job_run_id")


def actor_arguments() -> tuple[str | None, ...] | None:
    """What `bind_transaction` passes to `bind_actor` for the actor bound here (in `_ARGUMENTS` order), or None when
    no actor is bound."""
    bound = current_actor()
    if bound is None or bound.id is None:
        return None
    return bound.id, bound.type, bound.ip, bound.request_id, bound.run_id


def bind_transaction(conn: Any) -> bool:
    """Write the bound actor into `conn`'s current transaction; False when no actor is bound (nothing written).

    Raises `EventError` for a connection in autocommit mode (the message would be a transaction of its own,
    attributing nothing) or of a kind it does not know.
    """
    arguments = actor_arguments()
    if arguments is None:
        return False
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        _bind_sqlalchemy(conn, arguments)
    elif module.startswith("psycopg2"):
        _refuse_autocommit(bool(conn.autocommit))
        with conn.cursor() as cursor:
            cursor.execute(_BIND, arguments)
    elif module.startswith("psycopg"):
        _refuse_autocommit(bool(conn.autocommit))
        conn.execute(_BIND, arguments)
    else:
        raise EventError(f"bind_transaction: {type(conn).__name__} is not a psycopg 3 / psycopg2 connection or a "
                         "SQLAlchemy Connection / Session")
    return True


def _bind_sqlalchemy(conn: Any, arguments: tuple[str | None, ...]) -> None:
    from sqlalchemy import text as sql_text  # noqa: PLC0415 - only for SQLAlchemy users

    connection = conn.connection() if hasattr(conn, "connection") and callable(conn.connection) else conn
    # The driver's own flag: SQLAlchemy's get_isolation_level() reports the server's level, never "AUTOCOMMIT".
    _refuse_autocommit(getattr(connection.connection.dbapi_connection, "autocommit", False) is True)
    connection.execute(sql_text(_BIND_NAMED), dict(zip(_ARGUMENTS, arguments, strict=True)))


def _refuse_autocommit(autocommit: bool) -> None:
    if autocommit:
        raise EventError("bind_transaction: the connection is in autocommit mode, so the actor would be a "
                         "transaction of its own and attribute nothing: call it inside the transaction that makes "
                         "the changes (psycopg 3: `with conn.transaction():`)")


_BOUND_KEY = "auditlock_capture_bound"  # session.info: the root transaction (weakref) and what each connection carries


def bind_session_transactions(target: Any) -> Any:
    """Bind the actor into every transaction of a SQLAlchemy Session / sessionmaker (sync) — at its start, and again
    before a flush or a statement whenever the actor bound now is not the one its transaction already carries;
    returns a handle with `untrack()`. What `track(..., capture="wal")` installs.

    Binding only at the start would attribute the rows to whoever was bound when the transaction began: a web app
    whose authentication dependency loads the user through the request's session (FastAPI's usual
    `get_current_user`) begins the transaction before `set_request_actor`, so every change of the request would
    be recorded as the anonymous (or no) actor. Capture attributes each row to the actor message written before
    it in its transaction, so binding again before the rows is exact; an actor that stays the same costs one
    message per transaction, as before. The binding goes into each connection the session's transaction holds
    (a session bound to several engines); a connection it begins later is bound when it begins.
    """
    from sqlalchemy import event  # noqa: PLC0415

    def after_begin(session: Any, _transaction: Any, connection: Any) -> None:
        _connections(session).setdefault(connection, None)
        _bind_if_needed(session)

    def before_flush(session: Any, _flush_context: Any, _instances: Any) -> None:
        _bind_if_needed(session)

    def do_orm_execute(state: Any) -> None:
        if not state.is_select:
            _bind_if_needed(state.session)

    listeners = (("after_begin", after_begin), ("before_flush", before_flush), ("do_orm_execute", do_orm_execute))
    for name, listener in listeners:
        event.listen(target, name, listener)
    return _Binding(target, listeners)


def _connections(session: Any) -> dict[Any, Any]:
    """The connections of the session's current transaction → (weakref to the transaction bound in, arguments)
    or None; a new dict once the session is in another transaction."""
    root = session.get_transaction()
    held = session.info.get(_BOUND_KEY)
    if held is None or held[0]() is not root:
        held = (weakref.ref(root) if root is not None else lambda: None, {})
        session.info[_BOUND_KEY] = held
    return held[1]  # type: ignore[no-any-return]


def _bind_if_needed(session: Any) -> None:
    """Bind the current actor into each connection of the session's transaction that does not carry it yet —
    in this transaction or an enclosing one still open. A binding made inside a savepoint that has ended since is
    not trusted: a rolled-back savepoint took its message with it, so the actor is bound again."""
    arguments = actor_arguments()
    if arguments is None or not session.in_transaction():
        return
    current = session.get_nested_transaction() or session.get_transaction()
    connections = _connections(session)
    for connection, bound in connections.items():
        if bound is not None and bound[1] == arguments and _encloses(bound[0](), current):
            continue
        bind_transaction(connection)
        connections[connection] = (weakref.ref(current), arguments)


def _encloses(bound_in: Any, current: Any) -> bool:
    """True when `bound_in` is `current` or one of its parents (a transaction still open around it)."""
    while current is not None:
        if current is bound_in:
            return True
        current = current.parent
    return False


class _Binding:
    """The listeners of `bind_session_transactions`; `untrack()` removes them (twice is harmless)."""

    def __init__(self, target: Any, listeners: tuple[tuple[str, Any], ...]) -> None:
        self._target, self._listeners, self._on = target, listeners, True

    def untrack(self) -> None:
        """Remove the listeners."""
        if self._on:
            from sqlalchemy import event  # noqa: PLC0415

            for name, listener in self._listeners:
                event.remove(self._target, name, listener)
            self._on = False

    def __enter__(self) -> _Binding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.untrack()
