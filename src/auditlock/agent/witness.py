"""The witness: the agent follows every segment as it grows and keeps its own copy of every line it saw (issue #16).

Why: the chain is unkeyed and the application can write the spool, so between a write and its upload anyone with
the application's rights can rewrite a sealed segment and recompute `prev` down the chain; every check that reads
only the spool then passes. The witness pins what the agent saw, within a bounded lag of the write, in the agent's
state directory — which the application's user cannot write once the two run as different users
(docs/operations.md). Shipping compares each segment with it (`agent.witness_guard`).

Format: `<state dir>/witness/` (mode 0700) holds one copy per segment still in the spool, named like the segment
as the witness last saw it (`spool.witnessed.copy_names`): `<writer>.<first_seq:016x>.open.jsonl` while it has not
read the sealed segment to its end, `<writer>.<first_seq:016x>.jsonl` once it has (a "sealed copy"). A copy holds
exactly the first bytes of its segment as the witness read them: whole lines only, appended in order, fsync'd
(mode 0600). A checkpoint — (writer, seq, hash of the line), the copy's last line or *head* — is durable when its
bytes are; the head pins every line before it through the chain. `findings.jsonl` beside the copies holds the
findings no delivered digest carries yet (`agent.witness_guard`).

Invariants
- A copy is a prefix of what the writer wrote, as the witness saw it: it appends only whole lines read past the
  copy's end, and only when they continue the copy's chain (the first new line's writer, seq and — after the
  segment's first line — prev follow the head; the last new line's seq is the count). What does not continue it
  is never copied: the witness stops following that segment and shipping finds the difference.
- Shipping: a witnessed segment must begin with exactly its copy, and end there too if the copy is sealed; a
  witnessed segment gone without the agent having shipped or set it aside is missing.
- A copy goes only after the agent deleted its segment (S3 confirmed it: delete, then copy, then ledger cleared,
  so a crash in between repeats the release) or set the segment aside (the copy then moves next to it in
  `quarantine/`, as evidence of what the agent saw).
- Bounded: copies exist only for segments in the spool (the same bytes again, outside the spool's `max_bytes`);
  each tick reads at most `READ_CHUNK` bytes of a segment and starts no read after `TICK_BUDGET` (open segments
  first, so a backlog does not delay live writers); a line longer than a writer writes stops the copy; a
  sealed copy or a stopped one is never read again. Copies are read back as hostile (`spool.files`): a torn last
  line (a crash mid-append) is cut off at start.

What it cannot see
- A line changed before the witness read it: the lag, one tick (`WITNESS_INTERVAL_S`) plus a read and an fsync
  (`auditlock_witness_lag_seconds`, docs/verify.md).
- Anything written and changed while the agent is not running (those segments are unwitnessed; their chain is
  still checked), and segments already in the spool when the witness first reads them.
- A user who can write the agent's state directory (the same UID) can rewrite the copies too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from auditlock.spool.files import UnsafeSpoolFileError, open_spool_file
from auditlock.spool.format import (
    DIR_MODE,
    FILE_MODE,
    OPEN_SUFFIX,
    SegmentName,
    fsync_dir,
    line_hash,
    parse_segment_name,
)
from auditlock.spool.lines import valid_event
from auditlock.spool.witnessed import WITNESS_DIR, compare_with_copy, copy_names

log = logging.getLogger("auditlock.agent")

WITNESS_INTERVAL_S = 0.02
READ_CHUNK = 4 * 1024 * 1024  # at most this much of one segment per tick
TICK_BUDGET = 8 * 1024 * 1024  # no further segment is read in a tick once this much was (memory: budget + chunk)
Key = tuple[str, int]  # (writer, first_seq): a segment whether open or sealed


@dataclass
class Copy:
    """What the witness holds of one segment."""

    name: SegmentName  # the sealed form
    path: Path
    size: int = 0
    sealed: bool = False
    head_seq: int | None = None
    head_hash: str | None = None
    stopped: str | None = None  # why the witness stopped following the segment

    @property
    def key(self) -> Key:
        """The segment's identity."""
        return self.name.writer, self.name.first_seq


@dataclass(frozen=True)
class _Chunk:
    """New whole lines that continue a copy."""

    data: bytes
    first_occurred_at: str
    last_seq: int
    last_hash: str
    seals: bool = False  # the chunk ends the sealed segment: the copy is sealed once it is durable


class Witness:
    """The copies of one agent's state directory; `follow_once` reads what the segments gained since."""

    def __init__(self, state_dir: Path, spool: Path, max_segment_bytes: int, max_line_bytes: int,
                 on_lag: Callable[[float], None] | None = None) -> None:
        self.dir = state_dir / WITNESS_DIR
        self.spool = spool
        self.max_segment_bytes = max_segment_bytes
        self.max_line_bytes = max_line_bytes
        self.on_lag = on_lag or (lambda _lag: None)
        self.lock = threading.Lock()
        self.copies: dict[Key, Copy] = {}
        ensure_witness_dir(state_dir)
        self._load()

    # --- start-up ------------------------------------------------------------------------------------

    def _load(self) -> None:
        with os.scandir(self.dir) as entries:
            names = sorted(entry.name for entry in entries)
        for filename in names:
            name = parse_segment_name(filename)
            if name is not None:
                self._load_copy(self.dir / filename, name)

    def _load_copy(self, path: Path, name: SegmentName) -> None:
        copy = Copy(name.sealed(), path, sealed=not name.is_open)
        try:
            with open_spool_file(path, self.max_segment_bytes, write=True) as f:
                size = os.fstat(f.fileno()).st_size
                start = max(size - self.max_line_bytes - 1, 0)
                f.seek(start)
                tail = f.read()
                cut = tail.rfind(b"\n") + 1
                if cut < len(tail):  # a crash during an append: what follows the last newline was never a checkpoint
                    f.truncate(start + cut)
                    os.fsync(f.fileno())
        except UnsafeSpoolFileError as exc:
            log.error("auditlock agent: witness copy %s not read: %s", path, exc.reason)
            return
        copy.size = start + cut
        self._set_head(copy, tail[:cut])
        self.copies[copy.key] = copy

    @staticmethod
    def _set_head(copy: Copy, data: bytes) -> None:
        if not data:
            return
        body = data[data.rfind(b"\n", 0, len(data) - 1) + 1:-1]
        event = valid_event(body)
        copy.head_seq = event["seq"] if event is not None else None
        copy.head_hash = line_hash(body)

    # --- following the segments ----------------------------------------------------------------------

    def follow(self, stop: threading.Event, interval: float = WITNESS_INTERVAL_S) -> None:
        """Follow the spool every `interval` seconds until `stop` is set (the agent's witness thread). Ticks start
        at a fixed rate, so a slow tick (a slow fsync) shortens the next wait instead of adding to the lag."""
        next_tick = time.monotonic() + interval
        while not stop.wait(max(next_tick - time.monotonic(), 0.0)):
            try:
                self.follow_once()
            except OSError as exc:  # a full disk must not end the thread: the next tick tries again
                log.error("auditlock agent: the witness could not record what it read: %s", exc)
            next_tick = max(next_tick + interval, time.monotonic() + interval / 4)  # behind: soon, not in a burst

    def follow_once(self) -> None:
        """Append every whole line segments gained since the last tick to their copies, durably."""
        with self.lock:
            grown: list[tuple[Copy, _Chunk]] = []
            read = 0
            for filename, size in _segment_sizes(self.spool):  # live writers' open segments first: the lag
                name = parse_segment_name(filename)
                if name is None:
                    continue
                chunk = self._grown(filename, name, size)
                if chunk is not None:
                    grown.append(chunk)
                    read += len(chunk[1].data)
                    if read >= TICK_BUDGET:
                        break  # a backlog is caught up over several ticks
            self._make_durable(grown)

    def _grown(self, filename: str, name: SegmentName, size: int) -> tuple[Copy, _Chunk] | None:
        sealed_name = name.sealed()
        copy = self.copies.get((name.writer, name.first_seq))
        if copy is not None and (copy.sealed or copy.stopped):
            return None
        offset = copy.size if copy is not None else 0
        if size < offset and copy is not None:
            self._stop(copy, f"it shrank to {size} bytes, below the {offset} bytes witnessed")
            return None
        if size == offset:
            if copy is not None and not name.is_open:
                self._seal(copy)
            return None
        if copy is None:
            copy = self.copies[(name.writer, name.first_seq)] = Copy(sealed_name, self.dir / copy_names(name)[0])
        chunk = self._read(filename, name, copy, offset)
        return None if chunk is None else (copy, chunk)

    def _read(self, filename: str, name: SegmentName, copy: Copy, offset: int) -> _Chunk | None:
        try:
            with open_spool_file(self.spool / filename, self.max_segment_bytes) as f:
                f.seek(offset)
                data = f.read(READ_CHUNK)
                sealed_to_end = not name.is_open and f.tell() == os.fstat(f.fileno()).st_size
        except (FileNotFoundError, UnsafeSpoolFileError):
            return None  # shipped, sealed or quarantined meanwhile: the next tick sees it under its new name
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > self.max_line_bytes:
                self._stop(copy, f"a line longer than {self.max_line_bytes} bytes (no writer writes one)")
            return None
        chunk, problem = _continuation(copy, name, data[:cut])
        if problem is not None:
            self._stop(copy, problem)
            return None
        assert chunk is not None
        return replace(chunk, seals=sealed_to_end and cut == len(data))

    def _make_durable(self, grown: list[tuple[Copy, _Chunk]]) -> None:
        if not grown:
            return
        created = False
        for copy, chunk in grown:
            created |= copy.size == 0
            _append(copy.path, chunk.data, copy.size)
            copy.size += len(chunk.data)
            copy.head_seq, copy.head_hash = chunk.last_seq, chunk.last_hash
        if created:
            fsync_dir(self.dir)
        for copy, chunk in grown:
            if chunk.seals:
                self._seal(copy)
        now = time.time()
        for _copy, chunk in grown:
            self.on_lag(max(now - _epoch(chunk.first_occurred_at), 0.0))

    def _seal(self, copy: Copy) -> None:
        copy.sealed = True
        if copy.size:
            self._rename_sealed(copy)

    def _rename_sealed(self, copy: Copy) -> None:
        target = self.dir / copy.name.filename
        if copy.path != target:
            os.rename(copy.path, target)
            fsync_dir(self.dir)
            copy.path = target

    def _stop(self, copy: Copy, why: str) -> None:
        copy.stopped = why
        log.warning("auditlock agent: the witness stopped following %s: %s (what it saw is kept; shipping compares "
                    "the segment with it)", copy.name.filename, why)

    # --- what shipping asks --------------------------------------------------------------------------

    def compare(self, segment: Path, name: SegmentName) -> str | None:
        """What differs between a segment and its copy (None: agrees, or never witnessed)."""
        with self.lock:
            copy = self.copies.get((name.writer, name.first_seq))
            if copy is None or copy.size == 0:
                return None
            return compare_with_copy(segment, copy.path, sealed=copy.sealed, max_bytes=self.max_segment_bytes)

    def copy_of(self, name: SegmentName) -> Copy | None:
        """The witness's copy of a segment, if it holds one with at least one line."""
        copy = self.copies.get((name.writer, name.first_seq))
        return copy if copy is not None and copy.size else None

    def missing(self) -> list[Copy]:
        """Copies whose segment is in the spool under neither name (open is looked up first: a writer or recovery
        only ever renames open → sealed, so a segment sealed in between is found under its sealed name)."""
        with self.lock:
            return [copy for copy in self.copies.values() if copy.size
                    and not any(os.path.lexists(self.spool / n) for n in copy_names(copy.name))]

    def heads(self, names: Iterable[str]) -> dict[str, tuple[int, str]]:
        """The highest witnessed (seq, line hash) per writer among these segments."""
        heads: dict[str, tuple[int, str]] = {}
        for filename in names:
            name = parse_segment_name(filename)
            copy = self.copy_of(name) if name is not None else None
            if copy is None or copy.head_seq is None or copy.head_hash is None:
                continue
            known = heads.get(copy.name.writer)
            if known is None or copy.head_seq > known[0]:
                heads[copy.name.writer] = (copy.head_seq, copy.head_hash)
        return heads

    def release(self, names: Iterable[str]) -> None:
        """Forget the copies of segments the agent shipped (and deleted) or set aside itself."""
        with self.lock:
            removed = False
            for filename in names:
                name = parse_segment_name(filename)
                copy = self.copies.pop((name.writer, name.first_seq), None) if name is not None else None
                if copy is not None and copy.size:
                    with contextlib.suppress(FileNotFoundError):
                        copy.path.unlink()
                        removed = True
            if removed:
                fsync_dir(self.dir)

    def move_copy(self, copy: Copy, target: Path) -> Path:
        """Move a copy out of the witness (as evidence next to a quarantined segment); forget it."""
        with self.lock:
            self.copies.pop(copy.key, None)
            try:
                os.rename(copy.path, target)
            except OSError:  # another file system ([agent] state_dir outside the spool): copy, then remove
                _copy_file(copy.path, target)
                copy.path.unlink()
            fsync_dir(target.parent)
            fsync_dir(self.dir)
            return target


def _segment_sizes(spool: Path) -> list[tuple[str, int]]:
    found = []
    with os.scandir(spool) as entries:
        for entry in entries:
            if not entry.name.endswith(".jsonl"):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append((entry.name, st.st_size))
    return sorted(found, key=lambda found: (not found[0].endswith(OPEN_SUFFIX), found[0]))


def _continuation(copy: Copy, name: SegmentName, data: bytes) -> tuple[_Chunk | None, str | None]:
    """The chunk if `data` (whole lines) continues the copy's chain, else why not."""
    first_end = data.index(b"\n")
    last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    first = valid_event(data[:first_end])
    last = first if last_start == 0 else valid_event(data[last_start:-1])
    if first is None or last is None:
        return None, "a line that is not a valid event"
    expected = name.first_seq if copy.head_seq is None else copy.head_seq + 1
    if first["writer"] != name.writer or first["seq"] != expected:
        return None, f"seq {first['seq']} of writer {first['writer'][:32]} follows where seq {expected} was expected"
    if copy.head_hash is not None and first["prev"] != copy.head_hash:
        return None, f"the line of seq {expected} does not continue the witnessed line before it (prev differs)"
    if last["writer"] != name.writer or last["seq"] != expected + data.count(b"\n") - 1:
        return None, "the lines read do not number consecutively"
    return _Chunk(data, first["occurred_at"], last["seq"], line_hash(data[last_start:-1])), None


def _append(path: Path, data: bytes, size: int) -> None:
    """Append whole lines to a copy of `size` bytes and fsync; on a failure take them back (the copy stays a prefix
    of whole lines, and the next tick appends them again)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise
    finally:
        os.close(fd)


def _copy_file(source: Path, target: Path) -> None:
    with open_spool_file(source) as f:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            while block := f.read(READ_CHUNK):
                out.write(block)
            out.flush()
            os.fsync(fd)


def _epoch(occurred_at: str) -> float:
    return dt.datetime.strptime(occurred_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def ensure_witness_dir(state_dir: Path) -> Path:
    """The witness directory (0700), created if needed."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    path = state_dir / WITNESS_DIR
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    return path
