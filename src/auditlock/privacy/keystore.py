"""The key store of erasable fields: one data key per subject, shared by every replica and by the readers.

Two stores (`[erasure] store`): `sql` — a table in the application's own database through SQLAlchemy Core
(`sql_store`), the production store; `file` — one file per subject in a local directory (`file_store`), for a
single host, tests and the demo. Both offer the same four operations (`KeyStore`) and agree on concurrency:
two processes creating the first key of one subject at once end up with the same key (a unique constraint, an
atomic create-if-absent), whichever wins.

Erasing a subject removes its key and leaves a tombstone holding only the key id (no subject, no key), so readers
tell an erased value (`[erased]`) from one whose key this store never had (a finding: a different store?).

`KeyCache` is the in-process cache: a subject's key is asked from the store at most once per `cache_ttl_s`; when
the store cannot be reached, a cached key keeps being used (events keep flowing) and a subject with no cached
key is refused with `KeyStoreError` naming the cause (fail closed). After `auditlock erase`, a replica holding
the subject's key uses it for at most `cache_ttl_s` more before it asks again and gets a new key.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

from auditlock.config.model import ErasureConfig
from auditlock.errors import ConfigError, KeyStoreError
from auditlock.privacy.crypto import DataKey

Lookup = DataKey | Literal["erased", "unknown"]
CACHE_MAX_SUBJECTS = 10_000


class KeyStore(Protocol):
    """What both stores offer; every failure to reach or read the store is a `KeyStoreError` naming it."""

    def key_for(self, subject: str) -> DataKey:
        """The subject's data key, created (once, whoever asks first) if it has none."""

    def lookup(self, key_id: str) -> Lookup:
        """The key with this id, `"erased"` if it was destroyed, `"unknown"` if this store never had it."""

    def subject_key(self, subject: str) -> DataKey | None:
        """The subject's data key if it has one (never creates)."""

    def erase(self, subject: str) -> list[str]:
        """Destroy the subject's keys (tombstones keep only the ids); the ids destroyed, empty if none."""

    def close(self) -> None:
        """Release connections (safe to call twice; the store may be used again afterwards)."""


def open_store(config: ErasureConfig) -> KeyStore:
    """The store `[erasure]` configures (its connection or directory is opened on first use)."""
    if config.store == "file" and config.dir is not None:
        from auditlock.privacy.file_store import FileKeyStore  # noqa: PLC0415 - one store per process

        return FileKeyStore(config.dir)
    if config.store == "sql":
        from auditlock.privacy.sql_store import SqlKeyStore  # noqa: PLC0415 - SQLAlchemy only for this store

        return SqlKeyStore(config.load_dsn())
    raise ConfigError('erasable fields need [erasure] store = "sql" (with dsn_env or dsn_file) or "file" '
                      "(with dir); see docs/privacy.md")


class KeyCache:
    """Subjects' keys (sealing) and key ids' lookups (revealing), cached in-process with a time to live."""

    def __init__(self, store: KeyStore, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._ttl = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._subjects: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()
        self._ids: dict[str, Lookup] = {}

    def fresh(self, subject: str) -> DataKey | None:
        """The subject's cached key if it is fresh, else None (no store access)."""
        cached = self._subjects.get(subject)
        if cached is not None and self._clock() - cached[1] < self._ttl:
            return cached[0]
        return None

    def key_for(self, subject: str) -> DataKey:
        """The subject's key: cached while fresh; from the store otherwise (a stale key if it is unreachable)."""
        cached = self._subjects.get(subject)
        if cached is not None and self._clock() - cached[1] < self._ttl:
            return cached[0]
        with self._lock:
            return self._refresh(subject, cached)

    def _refresh(self, subject: str, cached: tuple[DataKey, float] | None) -> DataKey:
        try:
            key = self.store.key_for(subject)
        except KeyStoreError:
            if cached is None:
                raise  # fail closed: no key to seal with
            key = cached[0]  # the store is down: the cached key keeps events flowing
        self._subjects[subject] = (key, self._clock())
        self._subjects.move_to_end(subject)
        while len(self._subjects) > CACHE_MAX_SUBJECTS:
            self._subjects.popitem(last=False)
        return key

    def lookup(self, key_id: str) -> Lookup:
        """The store's answer for a key id, asked once per cache (readers run for one request)."""
        found = self._ids.get(key_id)
        if found is None:
            found = self._ids[key_id] = self.store.lookup(key_id)
            if len(self._ids) > CACHE_MAX_SUBJECTS:
                self._ids.clear()
                self._ids[key_id] = found
        return found
