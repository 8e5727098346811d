"""Where the SQLAlchemy integration's listeners go for SQLAlchemy's asyncio objects, which take no ORM events.

Re-exported as `auditlock.integrations.sqlalchemy.sync_event_target`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker


def sync_event_target(session_or_factory: Any) -> Any:
    """The sync `Session`, `sessionmaker` or `Session` class whose events cover `session_or_factory`.

    SQLAlchemy's asyncio objects take no ORM events themselves; their sync counterparts do:

    - an `AsyncSession` -> its `sync_session`;
    - an `async_scoped_session` -> what its `session_factory` (an `async_sessionmaker`) gives;
    - an `async_sessionmaker` -> the `sessionmaker` its sessions' `sync_session_class` is, when the application
      configured one (`async_sessionmaker(engine, sync_session_class=sessionmaker())`); otherwise a private
      `sessionmaker(class_=<the sync class>)` is installed with `configure(sync_session_class=...)` — listening on
      the shared `Session` class instead would track every session of the process. Sessions the maker made
      earlier keep their old class and are not tracked; the installed sessionmaker stays after `untrack()`
      (it behaves as the class it wraps);
    - an `AsyncSession` class -> its `sync_session_class` (`Session` for `AsyncSession` itself: every session).

    Anything else is returned unchanged (sync targets, and whatever `event.listen` decides about the rest).
    """
    try:
        from sqlalchemy.ext.asyncio import (  # noqa: PLC0415 - the asyncio extension is optional to its users
            AsyncSession,
            async_scoped_session,
            async_sessionmaker,
        )
    except ImportError:  # pragma: no cover - part of SQLAlchemy 2.x; kept for trimmed installs
        return session_or_factory
    target = session_or_factory
    if isinstance(target, async_scoped_session):
        target = target.session_factory
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, type) and issubclass(target, AsyncSession):
        return target.sync_session_class
    if isinstance(target, async_sessionmaker):
        sync_factory: Any = target.kw.get("sync_session_class") or target.class_.sync_session_class
        if isinstance(sync_factory, sessionmaker):
            return sync_factory
        if not (isinstance(sync_factory, type) and issubclass(sync_factory, Session)):
            raise TypeError(f"track(): the sync_session_class of {target!r} is {sync_factory!r}, neither a Session "
                            "subclass nor a sessionmaker; pass a sessionmaker to track its sessions")
        private = sessionmaker(class_=sync_factory)
        target.configure(sync_session_class=private)
        return private
    return target
