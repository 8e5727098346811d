"""The SQL key store (`[erasure] store = "sql"`): two tables in the application's own database (SQLAlchemy Core).

    auditlock_data_keys    key_id (primary key), subject (unique), data_key (32 bytes), created_at
    auditlock_erased_keys  key_id (primary key), erased_at: the tombstones (no subject, no key)

Created on first use if absent. Two processes creating a subject's first key at once both INSERT; the unique
constraint on `subject` refuses the second, which reads the winner's row. Erasing deletes the subject's row and
inserts its tombstone in one transaction. A deleted row's bytes stay in the database's files until VACUUM
reuses them, and in its WAL and backups until those expire: docs/privacy.md says what that means for erasure.
Every database failure is a `KeyStoreError` naming the database (password hidden) and the cause.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from auditlock.errors import KeyStoreError
from auditlock.privacy.crypto import KEY_BYTES, KEY_ID, DataKey
from auditlock.privacy.keystore import Lookup

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5

metadata = sa.MetaData()
data_keys = sa.Table(
    "auditlock_data_keys", metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("subject", sa.String(400), nullable=False, unique=True),
    sa.Column("data_key", sa.LargeBinary(KEY_BYTES), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
erased_keys = sa.Table(
    "auditlock_erased_keys", metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
)


class SqlKeyStore:
    """Data keys in a SQL database (see the module docstring)."""

    def __init__(self, dsn: str) -> None:
        try:
            url = sa.make_url(dsn)
        except (SQLAlchemyError, ValueError) as exc:
            raise KeyStoreError(f"[erasure] the key store's URL is not a SQLAlchemy URL: {exc}") from exc
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        self.name = url.render_as_string(hide_password=True)
        self._ready = False

    def key_for(self, subject: str) -> DataKey:
        """The subject's key, created if it has none (a concurrent creator's row wins the unique constraint)."""
        found = self.subject_key(subject)
        if found is not None:
            return found
        key = DataKey.generate(subject)
        row = {"key_id": key.key_id, "subject": subject, "data_key": key.key, "created_at": _now()}
        try:
            self._run(lambda conn: conn.execute(data_keys.insert().values(**row)))
        except IntegrityError:
            winner = self.subject_key(subject)
            if winner is None:
                raise KeyStoreError(f"key store {self.name}: the key of {subject!r} vanished while it was created "
                                    "(an erase at the same moment?); retry") from None
            return winner
        return key

    def subject_key(self, subject: str) -> DataKey | None:
        """The subject's key if it has one."""
        query = sa.select(data_keys.c.key_id, data_keys.c.data_key).where(data_keys.c.subject == subject)
        row = self._run(lambda conn: conn.execute(query).first())
        return None if row is None else self._key(row.key_id, subject, row.data_key)

    def lookup(self, key_id: str) -> Lookup:
        """The key with this id, "erased", or "unknown"."""
        if not KEY_ID.match(key_id):
            return "unknown"

        def read(conn: sa.Connection) -> Lookup:
            row = conn.execute(sa.select(data_keys.c.subject, data_keys.c.data_key)
                               .where(data_keys.c.key_id == key_id)).first()
            if row is not None:
                return self._key(key_id, row.subject, row.data_key)
            erased = conn.execute(sa.select(erased_keys.c.key_id).where(erased_keys.c.key_id == key_id)).first()
            return "erased" if erased is not None else "unknown"

        return self._run(read)

    def erase(self, subject: str) -> list[str]:
        """Delete the subject's row and insert its tombstone, in one transaction; the key ids destroyed."""
        def destroy(conn: sa.Connection) -> list[str]:
            ids = [row.key_id for row in conn.execute(
                sa.select(data_keys.c.key_id).where(data_keys.c.subject == subject).with_for_update())]
            if ids:
                conn.execute(data_keys.delete().where(data_keys.c.key_id.in_(ids)))
                conn.execute(erased_keys.insert(), [{"key_id": i, "erased_at": _now()} for i in ids])
            return ids

        return self._run(destroy)

    def close(self) -> None:
        """Close the connection pool."""
        self.engine.dispose()

    def _run(self, work: Callable[[sa.Connection], T]) -> T:
        """`work` in one transaction; a database failure (other than a unique violation) is a KeyStoreError."""
        try:
            self._prepare()
            with self.engine.begin() as conn:
                return work(conn)
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise KeyStoreError(f"key store {self.name} unreachable or failing: {_cause(exc)}; check the database "
                                "and [erasure] dsn_env / dsn_file") from exc

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            metadata.create_all(self.engine, checkfirst=True)
        except SQLAlchemyError:
            # Another process created the tables between our check and our CREATE: check again, once.
            metadata.create_all(self.engine, checkfirst=True)
        self._ready = True

    def _key(self, key_id: str, subject: str, data_key: bytes) -> DataKey:
        if len(data_key) != KEY_BYTES or not KEY_ID.match(key_id):
            raise KeyStoreError(f"key store {self.name}: the row of key {key_id!r} holds no valid key; restore it")
        return DataKey(key_id, subject, bytes(data_key))


def _cause(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
