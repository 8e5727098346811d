"""The file key store (`[erasure] store = "file"`): a directory on one host, for tests, the demo and single hosts.

Layout under `dir` (0700; every file 0600, written to a temporary name, fsync'd, then linked into place and the
directory fsync'd — a file is either absent or whole):

    subjects/<sha256 of the subject, hex>.json   {"subject": ..., "key_id": ...}
    keys/<key id>.json                           {"subject": ..., "key": <base64 of the 32-byte key>}
    erased/<key id>                              empty: the tombstone of a destroyed key

Creating a subject's first key writes its key file, then links the subject file with `link()`, which fails if
the name exists: of two processes racing, the loser removes its key file and reads the winner's. Erasing writes
the tombstone, unlinks the key file, then the subject file, and fsyncs the directories: the key's bytes are gone
from the file system (what the disk and its backups still hold is docs/privacy.md's subject). Every file is read
as hostile: no symlink followed, bounded size, validated fields.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import orjson

from auditlock.errors import KeyStoreError
from auditlock.privacy.crypto import KEY_BYTES, KEY_ID, DataKey
from auditlock.privacy.keystore import Lookup
from auditlock.spool.format import fsync_dir

MAX_FILE_BYTES = 4096
_DIRS = ("subjects", "keys", "erased")


class FileKeyStore:
    """Data keys as files under one directory (see the module docstring for the layout and its guarantees)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ready = False

    def key_for(self, subject: str) -> DataKey:
        """The subject's key, created if it has none (the first of racing creators wins)."""
        self._prepare()
        found = self.subject_key(subject)
        if found is not None:
            return found
        key = DataKey.generate(subject)
        key_file = self.root / "keys" / f"{key.key_id}.json"
        self._create(key_file, {"subject": subject, "key": base64.b64encode(key.key).decode()})
        if self._create(self._subject_file(subject), {"subject": subject, "key_id": key.key_id}):
            return key
        self._unlink(key_file)  # another process created the subject's key first: use theirs
        winner = self.subject_key(subject)
        if winner is None:
            raise KeyStoreError(f"file key store {self.root}: the key of {subject!r} vanished while it was created "
                                "(an erase at the same moment?); retry")
        return winner

    def subject_key(self, subject: str) -> DataKey | None:
        """The subject's key if it has one."""
        record = self._read_json(self._subject_file(subject))
        if record is None:
            return None
        key_id = record.get("key_id")
        if record.get("subject") != subject or not isinstance(key_id, str) or not KEY_ID.match(key_id):
            raise KeyStoreError(f"file key store: {self._subject_file(subject)} is not the subject file of "
                                f"{subject!r}; restore it from a backup or remove it")
        found = self.lookup(key_id)
        if isinstance(found, DataKey):
            return found
        if found == "erased":  # an erase was interrupted between the key and the subject file: finish it
            self._unlink(self._subject_file(subject))
            return None
        raise KeyStoreError(f"file key store: the key file of {subject!r} (key {key_id}) is missing; restore "
                            f"{self.root / 'keys'} from a backup")

    def lookup(self, key_id: str) -> Lookup:
        """The key with this id, "erased", or "unknown"."""
        if not KEY_ID.match(key_id):
            return "unknown"
        record = self._read_json(self.root / "keys" / f"{key_id}.json")
        if record is None:
            return "erased" if self._exists(self.root / "erased" / key_id) else "unknown"
        return DataKey(key_id, _subject_of(record, key_id), _key_of(record, key_id))

    def erase(self, subject: str) -> list[str]:
        """Tombstone, then unlink the key file and the subject file; the key ids destroyed."""
        self._prepare()
        key = self.subject_key(subject)
        if key is None:
            return []
        self._create(self.root / "erased" / key.key_id, None)
        self._unlink(self.root / "keys" / f"{key.key_id}.json")
        self._unlink(self._subject_file(subject))
        return [key.key_id]

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    # files

    def _subject_file(self, subject: str) -> Path:
        return self.root / "subjects" / f"{hashlib.sha256(subject.encode()).hexdigest()}.json"

    def _prepare(self) -> None:
        if self._ready:
            return
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in _DIRS:
                (self.root / name).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(f"file key store {self.root}: cannot create its directories: {exc.strerror}; "
                                "check [erasure] dir and its permissions") from exc
        self._ready = True

    def _create(self, path: Path, record: dict[str, Any] | None) -> bool:
        """Write `path` whole if absent (False if it already existed)."""
        tmp = path.parent / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
        data = b"" if record is None else orjson.dumps(record)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            fsync_dir(path.parent)
        except OSError as exc:
            raise KeyStoreError(f"file key store: cannot write {path}: {exc.strerror}; check [erasure] dir, its "
                                "space and permissions") from exc
        return True

    def _unlink(self, path: Path) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fsync_dir(path.parent)
        except OSError as exc:
            raise KeyStoreError(f"file key store: cannot remove {path}: {exc.strerror}") from exc

    def _exists(self, path: Path) -> bool:
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise KeyStoreError(f"file key store: cannot read {path}: {exc.strerror}") from exc

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"file key store: cannot open {path}: {exc.strerror}; check [erasure] dir and "
                                "its permissions (no symlinks)") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
                raise KeyStoreError(f"file key store: {path} is not a key store file (a regular file of at most "
                                    f"{MAX_FILE_BYTES} bytes)")
            data = os.read(fd, MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyStoreError(f"file key store: cannot read {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise KeyStoreError(f"file key store: {path} is not a JSON object; restore it from a backup")
        return record


def _subject_of(record: dict[str, Any], key_id: str) -> str:
    subject = record.get("subject")
    if not isinstance(subject, str) or not subject:
        raise KeyStoreError(f"file key store: the key file of key {key_id} names no subject; restore it")
    return subject


def _key_of(record: dict[str, Any], key_id: str) -> bytes:
    try:
        key = base64.b64decode(str(record.get("key")), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyStoreError(f"file key store: the key file of key {key_id} holds no {KEY_BYTES}-byte key; restore it")
    return key

