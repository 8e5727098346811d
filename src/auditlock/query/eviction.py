"""Bounding the local cache: beyond `[query] cache_max_bytes`, the least recently used entries are evicted.

Invariants (who may delete what)
- Only `trim` deletes from the cache, and only while it holds `<cache>/.lock` exclusively (flock).
- A query holds `<cache>/.lock` shared (a `lease`) from before it looks at an entry until its DuckDB view is
  closed, and downloads only inside a lease. So no entry a query is using, in this process or another, is ever
  evicted; a query's own downloads are trimmed after its view closes (a query larger than the bound answers,
  then trims). And a `.part-*` file seen by `trim` belongs to no running download: a crash left it; it goes.
- A download first leaves `<cache>/.trim-pending`; a lease that ends while the marker exists trims, and `trim`
  removes the marker. Trimming never waits for the lock: while another query holds it, the marker stays and the
  next lease to end (here or in another process) trims. A killed process's downloads are trimmed the same way.
- Use is an entry's mtime, stamped with `os.utime` (atime and mtime) each time a query uses it. The order reads
  mtime, not atime: any reader moves atime (backups, the kernel's `relatime`), while nothing rewrites an entry
  once it is renamed into place, so its mtime moves only when auditlock stamps it.
- Order: stale entries first — in a partition the query listed, but not listed any more with that ETag (the key
  was deleted or holds another object; unreachable, so they go even under the bound) — then the least recently
  used, until the entries' total size is at most the bound. Empty directories are removed.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from auditlock.archive import layout

DIR_MODE = 0o700
LOCK_NAME = ".lock"
PENDING_NAME = ".trim-pending"
PART_PREFIX = ".part-"
_SIZE = re.compile(r"^(\d+)(?:([KMGT])(?:iB)?)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes from `10737418240`, `512M`, `10G` or `10GiB` (K, M, G, T: powers of 1024); ValueError otherwise."""
    stripped = text.strip()
    if stripped.startswith("-") and _SIZE.match(stripped[1:]):
        raise ValueError(f"{text!r} is negative; give 0 or more bytes (0 keeps nothing once a query ends)")
    match = _SIZE.match(stripped)
    if not match:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T (powers of 1024), "
                         "e.g. 10G")
    return int(match[1]) * _UNITS[(match[2] or "").upper()]


@dataclass
class TrimReport:
    """What a trim removed and what it kept."""

    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0


@dataclass(frozen=True)
class _Entry:
    path: Path
    size: int
    used: float


@contextmanager
def lease(cache_dir: Path) -> Iterator[None]:
    """Hold the cache shared while a query looks at, downloads and reads its entries (none is evicted then)."""
    with _locked(cache_dir, fcntl.LOCK_SH):
        yield


def mark_pending(cache_dir: Path) -> None:
    """Note that the cache grew and wants a trim (done before downloading, so a crash cannot lose it)."""
    (cache_dir / PENDING_NAME).touch(mode=0o600)


def trim_pending(cache_dir: Path) -> bool:
    """Whether a download happened since the last trim."""
    return (cache_dir / PENDING_NAME).exists()


def trim(cache_dir: Path, max_bytes: int, *, stale: Collection[Path] = (), wait: bool = False) -> TrimReport | None:
    """Evict stale entries, then the least recently used, until the cache holds at most `max_bytes`.

    None when a query holds the cache and `wait` is false: the pending marker stays for the next lease to end.
    """
    try:
        with _locked(cache_dir, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)):
            (cache_dir / PENDING_NAME).unlink(missing_ok=True)
            return _evict(cache_dir / "archive", max_bytes, set(stale))
    except BlockingIOError:
        return None


@contextmanager
def _locked(cache_dir: Path, operation: int) -> Iterator[None]:
    cache_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)  # 0700 here protects all below
    fd = os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, operation)
        yield
    finally:
        os.close(fd)  # releases the lock


def _evict(root: Path, max_bytes: int, stale: set[Path]) -> TrimReport:
    entries = _entries(root)
    # stale first (False sorts first), then the oldest use; the path only makes the order total
    entries.sort(key=lambda e: (e.path not in stale, e.used, str(e.path)))
    total = sum(e.size for e in entries)
    report = TrimReport()
    for entry in entries:
        if entry.path not in stale and total <= max_bytes:
            report.kept += 1
            report.kept_bytes += entry.size
            continue
        entry.path.unlink(missing_ok=True)
        total -= entry.size
        report.removed += 1
        report.removed_bytes += entry.size
    _remove_empty_dirs(root)
    return report


def _entries(root: Path) -> list[_Entry]:
    """Every cache entry under `root`; leftover `.part-*` files (no download runs while trim holds the lock)
    are removed on the way."""
    entries = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if name.startswith(PART_PREFIX):
                path.unlink(missing_ok=True)
            elif name.endswith(layout.OBJECT_SUFFIX):
                stat = path.stat()
                entries.append(_Entry(path, stat.st_size, stat.st_mtime))
    return entries


def _remove_empty_dirs(root: Path) -> None:
    for directory, _, _ in os.walk(root, topdown=False):  # children before their parents
        if Path(directory) != root:
            with suppress(OSError):  # not empty: it holds a kept entry
                os.rmdir(directory)
