"""Who made a change, written into the change's own transaction — for `auditlock capture` (WAL capture).

    from auditlock.integrations.postgres import bind_transaction

    with conn.transaction():
        bind_transaction(conn)          # the actor bound now (auditlock.actor / request / job) goes into the WAL
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = 7")

`bind_transaction` emits one transactional logical decoding message (`pg_logical_emit_message(true,
'auditlock.actor', {...})`) with the bound actor id and type, client address, request id and job run id. It commits
— or rolls back — atomically with the rows, so no window is left between COMMIT and the spool: capture attributes
every later row change of the transaction to that actor (`capture.attribution`). Without a bound actor nothing is
emitted and capture attributes the rows to the database session (`actor_type = "db"`).

Accepts a psycopg 3 or psycopg2 connection, a SQLAlchemy `Connection` or `Session` (sync). With the SQLAlchemy ORM,
`track(..., capture="wal")` calls it at the start of every session transaction instead of recording events itself,
so a change is never recorded twice (docs/capture-postgres.md). Importing this module imports no driver.
"""

from __future__ import annotations

from typing import Any

import orjson

from auditlock.errors import EventError
from auditlock.handler.context import current_actor

ACTOR_PREFIX = "auditlock.actor"
_EMIT = "SELECT pg_logical_emit_message(true, 'auditlock.actor', %s)"


def actor_message() -> bytes | None:
    """The content `bind_transaction` emits for the actor bound here, or None when no actor is bound."""
    bound = current_actor()
    if bound is None or bound.id is None:
        return None
    content = {"actor_id": bound.id, "actor_type": bound.type, "actor_ip": bound.ip,
               "request_id": bound.request_id, "job_run_id": bound.run_id}
    return orjson.dumps({k: v for k, v in content.items() if v is not None})


def bind_transaction(conn: Any) -> bool:
    """Write the bound actor into `conn`'s current transaction; False when no actor is bound (nothing written).

    Raises `EventError` for a connection in autocommit mode (the message would be a transaction of its own,
    attributing nothing) or of a kind it does not know.
    """
    content = actor_message()
    if content is None:
        return False
    text = content.decode()
    module = type(conn).__module__
    if module.startswith("sqlalchemy"):
        _bind_sqlalchemy(conn, text)
    elif module.startswith("psycopg2"):
        _refuse_autocommit(bool(conn.autocommit))
        with conn.cursor() as cursor:
            cursor.execute(_EMIT, (text,))
    elif module.startswith("psycopg"):
        _refuse_autocommit(bool(conn.autocommit))
        conn.execute(_EMIT, (text,))
    else:
        raise EventError(f"bind_transaction: {type(conn).__name__} is not a psycopg 3 / psycopg2 connection or a "
                         "SQLAlchemy Connection / Session")
    return True


def _bind_sqlalchemy(conn: Any, text: str) -> None:
    from sqlalchemy import text as sql_text  # noqa: PLC0415 - only for SQLAlchemy users

    connection = conn.connection() if hasattr(conn, "connection") and callable(conn.connection) else conn
    # The driver's own flag: SQLAlchemy's get_isolation_level() reports the server's level, never "AUTOCOMMIT".
    _refuse_autocommit(getattr(connection.connection.dbapi_connection, "autocommit", False) is True)
    connection.execute(sql_text("SELECT pg_logical_emit_message(true, 'auditlock.actor', :content)"),
                       {"content": text})


def _refuse_autocommit(autocommit: bool) -> None:
    if autocommit:
        raise EventError("bind_transaction: the connection is in autocommit mode, so the actor would be a "
                         "transaction of its own and attribute nothing: call it inside the transaction that makes "
                         "the changes (psycopg 3: `with conn.transaction():`)")


def bind_session_transactions(target: Any) -> Any:
    """Call `bind_transaction` at the start of every transaction of a SQLAlchemy Session / sessionmaker (sync);
    returns a handle with `untrack()`. What `track(..., capture="wal")` installs."""
    from sqlalchemy import event  # noqa: PLC0415

    def after_begin(_session: Any, _transaction: Any, connection: Any) -> None:
        bind_transaction(connection)

    event.listen(target, "after_begin", after_begin)
    return _Binding(target, after_begin)


class _Binding:
    """The `after_begin` listener of `bind_session_transactions`; `untrack()` removes it (twice is harmless)."""

    def __init__(self, target: Any, listener: Any) -> None:
        self._target, self._listener, self._on = target, listener, True

    def untrack(self) -> None:
        """Remove the listener."""
        if self._on:
            from sqlalchemy import event  # noqa: PLC0415

            event.remove(self._target, "after_begin", self._listener)
            self._on = False

    def __enter__(self) -> _Binding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.untrack()
