"""Sessions ended by a logout: remembered until they would have expired anyway, so a copied or kept session cookie
is refused after its viewer signed out (the cookie is signed, so only the server can end it early).

Two places, both bounded:

- this process's memory: session id → the time the session expires. Expired entries are dropped at each
  logout; past `MAX_REMEMBERED` entries the view stops remembering ids and instead refuses every session issued
  up to now (everyone signs in again) — fail closed, never forgetting a logout;
- with `[ui] revoked_sessions_dir`, a directory the replicas share: one empty file per ended session, named by its
  id (32 hex digits, checked before it names a file), removed once the session would have expired. Every
  request to a replica stats the file of its session, so a logout at one replica ends the session at all of them.
  A directory that cannot be read refuses the session (fail closed); a logout that cannot be written there is
  an error (`SessionStateError`), answered 503, so no one is told they are signed out everywhere when they are not.

Without the directory, a logout ends the session at the replica that served it, until that replica restarts.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from auditlock.errors import AuditlockError, ConfigError
from auditlock.spool.format import fsync_dir

log = logging.getLogger("auditlock.ui")

MAX_REMEMBERED = 100_000
SESSION_ID = re.compile(r"^[0-9a-f]{32}\Z")


class SessionStateError(AuditlockError):
    """A logout could not be recorded where the view's replicas look for it."""


class RevokedSessions:
    """Says whether a session was ended by a logout; records logouts."""

    def __init__(self, max_age_s: int, directory: Path | None = None, *, clock: Callable[[], float] = time.time,
                 capacity: int = MAX_REMEMBERED) -> None:
        self.max_age_s = max_age_s
        self.directory = _usable(directory) if directory is not None else None
        self.clock = clock
        self.capacity = capacity
        self._expires: dict[str, float] = {}
        self._not_before = 0.0  # sessions issued before this are refused (set when memory is full)

    def __len__(self) -> int:
        """How many ended sessions this process remembers (bounded by `capacity`)."""
        return len(self._expires)

    def revoke(self, session_id: str, issued_at: int) -> None:
        """End a session (raises `SessionStateError` when the shared directory cannot record it)."""
        if not SESSION_ID.match(session_id):
            return
        now = self.clock()
        self._forget_expired(now)
        if len(self._expires) >= self.capacity:
            log.warning("auditlock ui: %d ended sessions remembered; refusing every session issued so far instead",
                        len(self._expires))
            self._expires.clear()
            self._not_before = now
        expires = issued_at + self.max_age_s
        self._expires[session_id] = expires
        if self.directory is not None:
            self._record(self.directory, session_id, expires)
            self._remove_expired_files(self.directory, now)

    def is_revoked(self, session_id: str, issued_at: int) -> bool:
        """Whether the session was ended (an id that is not one of ours counts as ended)."""
        if not SESSION_ID.match(session_id) or issued_at < self._not_before or session_id in self._expires:
            return True
        if self.directory is None:
            return False
        try:
            (self.directory / session_id).stat()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("auditlock ui: cannot read [ui] revoked_sessions_dir %s (%s); refusing the session",
                      self.directory, exc.strerror)
        return True

    def _forget_expired(self, now: float) -> None:
        self._expires = {sid: expires for sid, expires in self._expires.items() if expires > now}

    def _record(self, directory: Path, session_id: str, expires: float) -> None:
        """An empty file named by the session id, its mtime the session's expiry, fsync'd with its directory."""
        try:
            fd = os.open(directory / session_id, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.utime(fd, (expires, expires))
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(directory)
        except OSError as exc:
            raise SessionStateError(
                f"the logout could not be recorded in [ui] revoked_sessions_dir {directory} ({exc.strerror}), so "
                f"the session may still work at other replicas; make the directory writable by the view") from exc

    def _remove_expired_files(self, directory: Path, now: float) -> None:
        """A file whose mtime (the session's expiry) has passed names a session that ended anyway."""
        for entry in os.scandir(directory):
            try:
                if SESSION_ID.match(entry.name) and entry.stat().st_mtime < now:
                    os.unlink(entry.path)
            except OSError:
                continue  # another replica removed it first


def _usable(directory: Path) -> Path:
    """The directory, made if missing; a `ConfigError` names the key when it cannot be used."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = directory / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"[ui] revoked_sessions_dir: cannot write to {directory} ({exc.strerror}); give the view a "
                          f"directory it can write, shared by every replica") from exc
    return directory

