"""The in-process spool writer: makes audit events durable in segment files (see `spool.format`).

Thread-safe (one lock around stamp + write; in durability "sync" the fdatasync runs after it, shared by concurrent
callers: `spool.commit`), fork-safe (a child gets a new writer id and never touches the parent's segment),
fail-closed (every failure to make an event durable raises `SpoolError`). `close()` writes the clean-end record; it
runs from an `atexit` hook registered when a segment opens, and — for a process that stops without running `atexit`
(uvicorn re-raising SIGTERM, a plain SIGTERM) — from `spool.shutdown`, which closes every live writer.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from time import monotonic, monotonic_ns, time_ns
from typing import Any

from auditlock.config.model import SpoolConfig
from auditlock.errors import EventError, SpoolError
from auditlock.spool.chain import EventChain, uuid7_hex
from auditlock.spool.commit import GroupCommit
from auditlock.spool.drops import DropFile, drop_reason
from auditlock.spool.format import ensure_spool_dir
from auditlock.spool.segment import OpenSegment, TornSegmentError
from auditlock.spool.space import spool_error, spool_size

log = logging.getLogger("auditlock.spool")

_RESCAN_MIN_INTERVAL_NS = 50_000_000


class SpoolWriter:
    """Appends stamped events to this process's own segments in one spool directory."""

    def __init__(
        self, config: SpoolConfig, *, max_event_bytes: int = 65536, clock: Callable[[], int] = time_ns,
        measure: Callable[[Path], int] | None = None,
    ) -> None:
        """`clock` returns nanoseconds since the epoch (tests pass one to cross a month boundary); `measure` returns
        the bytes a spool directory holds, `spool_size` by default (tests pass one that holds the flusher's scan
        to write while it runs)."""
        self.config = config
        self._clock = clock
        self._measure = measure or spool_size
        # Builds the writer's last event (`auditlock.writer_closed`, given the count of events before it), so a
        # clean end is on record and a missing tail is not mistaken for one. Set by the handler core.
        self.closing_record: Callable[[int], dict[str, Any]] | None = None
        self.directory = Path(config.dir)
        self._max_event_bytes = max_event_bytes
        self._max_bytes, self._segment_max_bytes = config.max_bytes, config.segment_max_bytes
        self._init_state()
        _live_writers.add(self)

    def _init_state(self) -> None:
        # Everything that must be fresh in a new process: lock, id, chain, segment, flusher.
        self._lock = threading.RLock()
        self.chain = EventChain(uuid7_hex(time_ns()), max_event_bytes=self._max_event_bytes, clock=self._clock)
        self._segment: OpenSegment | None = None
        self._dirty = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._atexit_registered = False
        # Capacity: `_spool_bytes` never counts less than the spool holds (other processes' writes aside). It is
        # set by a measurement and grows by every line written. A refusal rests only on an exact count
        # (`_count_is_exact`) measured at `_scanned_at_ns`. `_written_total` and `_renames` (this writer's bytes
        # appended and segments renamed, ever) let a measurement taken outside the lock be settled under it.
        self._spool_bytes, self._count_is_exact, self._scanned_at_ns = 0, False, 0
        self._written_total = self._renames = 0
        self._unclosed = False  # events written since the last closing record
        self._sync_each, self._group = self.config.durability == "sync", self.config.durability == "group"
        # Held by the flusher around its background fsync (dup'd descriptor) and by the fork hook, so a child
        # never inherits that descriptor. Order: _sync_lock before _lock.
        self._sync_lock = threading.Lock()
        self.stats = {"events": 0, "bytes": 0, "segments_sealed": 0, "errors": 0, "sync_failures": 0}
        self._drops = DropFile(self.directory, self.chain.writer_id)  # named after the first id; no I/O yet
        self._commit = GroupCommit(self._lock, lambda: self._segment, self._abandon, self.stats,
                                   delay_us=self.config.commit_delay_us)

    @property
    def writer_id(self) -> str:
        """The id of this writer (changes in a forked child)."""
        return self.chain.writer_id

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Stamp `record` with the chain fields, write it durably per the durability mode, return it."""
        with self._lock:
            segment = self._append_locked(record)
            end = segment.size
        if self._sync_each:
            try:
                self._commit.wait_durable(segment, end)
            except OSError as exc:
                with self._lock:
                    self.stats["errors"] += 1
                raise spool_error(exc, self.directory) from exc
        return record

    def _append_locked(self, record: dict[str, Any]) -> OpenSegment:
        """Stamp and write (not yet durable in "sync" mode); the segment the line is in."""
        segment = self._segment
        if segment is not None and segment.sync_error is not None:
            self._abandon()  # a failed shared fsync: its lines are taken back, a new chain begins (spool.commit)
            segment = None
        try:
            while True:
                chain = self.chain
                line, month = chain.stamp(record)
                size = len(line)
                if (segment is not None and segment.month == month and segment.size + size <= self._segment_max_bytes
                        and monotonic() < segment.seal_at and self._spool_bytes + size <= self._max_bytes):
                    break  # the common case: `_must_rotate`'s checks and the capacity check, all passed
                segment = self._prepare_segment(size, month)
                if segment is not None:
                    break
                # The rotation found a failed fsync and abandoned the segment: stamp again, for the new chain.
            segment.append(line)
        except OSError as exc:
            if isinstance(exc, TornSegmentError):
                self._abandon()
            self.stats["errors"] += 1
            raise spool_error(exc, self.directory) from exc
        chain.advance(line)
        self._spool_bytes += size
        self._written_total += size
        self._unclosed = True
        if self._group:
            self._dirty = True
        elif self._sync_each:
            segment.lines += 1  # what a failed fdatasync takes back (spool.commit); read in "sync" only
        stats = self.stats
        stats["events"] += 1
        stats["bytes"] += size
        return segment

    def _prepare_segment(self, size: int, month: int) -> OpenSegment | None:
        """The slow path: rotate, check capacity, open — whatever the next line needs. None if sealing found a
        failed fsync and ended the chain the line was stamped for (`sync` mode)."""
        segment, chain = self._segment, self.chain
        if segment is not None and self._must_rotate(segment, size, month):
            self._seal()
            if self.chain is not chain:
                return None
            segment = None
        self._check_capacity(size)
        return segment or self._open(month)

    def _must_rotate(self, segment: OpenSegment, size: int, month: int) -> bool:
        return (
            segment.month != month
            or (segment.size > 0 and segment.size + size > self._segment_max_bytes)
            or monotonic() >= segment.seal_at
        )

    def _open(self, month: int) -> OpenSegment:
        ensure_spool_dir(self.directory)
        segment = OpenSegment.create(self.directory, self.writer_id, self.chain.seq, month)
        segment.seal_at = segment.opened_at + self.config.segment_max_age_s
        self._segment = segment
        self._register_atexit()
        self._start_flusher()  # group mode: fsync; every mode: seal by age, rescan capacity
        return segment

    # --- capacity ------------------------------------------------------------------------------------

    def _check_capacity(self, size: int) -> None:
        if self._scanned_at_ns == 0:
            self._rescan()
        if self._spool_bytes + size <= self._max_bytes:
            return
        if not self._count_is_exact or monotonic_ns() - self._scanned_at_ns > _RESCAN_MIN_INTERVAL_NS:
            self._rescan()
            if self._spool_bytes + size <= self._max_bytes:
                return
        raise OSError(errno.EDQUOT, f"spool holds {self._spool_bytes} bytes, [spool] max_bytes is {self._max_bytes}")

    def _rescan(self) -> None:
        """Measure the spool under the lock: exact, nothing of ours can change while it runs."""
        self._spool_bytes = self._measure(self.directory)
        self._count_is_exact, self._scanned_at_ns = True, monotonic_ns()

    def _measure_in_background(self) -> None:
        """The flusher's measurement, taken outside the lock and settled under it, so it can never be stale.

        What this writer appends while the directory is scanned may or may not be seen by the scan: it is added
        to the result (at worst counted twice, an overcount the next measurement removes), and such a measurement
        is not exact (a refusal measures again first). A segment this writer renames (seals) during the scan may
        be missed by it altogether (its old name listed, gone when stat'ed): then the result is dropped and the
        running count kept.
        """
        with self._lock:
            written, renames = self._written_total, self._renames
        spool_bytes = self._measure(self.directory)
        with self._lock:
            if self._renames != renames:
                return
            written_since = self._written_total - written
            self._spool_bytes = spool_bytes + written_since
            self._count_is_exact = written_since == 0
            if self._count_is_exact:
                self._scanned_at_ns = monotonic_ns()

    # --- durability, sealing -------------------------------------------------------------------------

    def _sync(self, segment: OpenSegment) -> bool:
        """group/process mode: fsync now; False (the segment abandoned) if that failed."""
        try:
            segment.sync()
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages: never trust this file again.
            self.stats["sync_failures"] += 1
            log.error("auditlock: fsync of %s failed (%s); abandoning the segment", segment.path, exc.strerror)
            self._abandon()
            return False
        self._dirty = False
        return True

    def _seal(self) -> None:
        segment = self._segment
        if segment is not None and self._sync_each and not self._commit.settle(segment):
            self._abandon()  # a failed fsync: the unsynced lines were taken back
            return
        self._segment = None
        self._dirty = False
        if segment is None:
            return
        self._renames += 1
        try:
            segment.seal()
            self.stats["segments_sealed"] += 1
        except OSError as exc:
            self.stats["sync_failures"] += 1
            log.error("auditlock: sealing %s failed (%s); the agent will recover it", segment.path, exc.strerror)

    def _abandon(self) -> None:
        """Leave the segment `.open` for the agent to recover, and continue as a new writer.

        The new writer id means no segment name and no seq is ever used twice, whatever the abandoned file holds;
        the old writer's chain simply ends there (verify reports where).
        """
        segment, self._segment = self._segment, None
        self._dirty = False
        if segment is not None:
            if self._sync_each:
                self._commit.settle(segment)  # answer its waiting callers: fsync'd, or taken back
            segment.abandon()
            old = self.chain.writer_id
            self.chain = EventChain(uuid7_hex(time_ns()), max_event_bytes=self._max_event_bytes, clock=self._clock)
            log.error("auditlock: writer %s abandoned %s; continuing as writer %s", old, segment.path.name,
                      self.chain.writer_id)

    def record_drop(self, exc: BaseException) -> None:
        """Count an event the caller dropped after `exc` (`on_error = "drop"`) in the spool (see `spool.drops`)."""
        self._drops.add(drop_reason(exc))
        with self._lock:  # unwritten counts are retried by the flusher and at exit, even if no segment ever opened
            self._register_atexit()
            self._start_flusher()

    def flush(self, timeout: float | None = None) -> bool:
        """Make everything appended so far durable; False if the lock or the fsync did not succeed in time."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        try:
            segment = self._segment
            if segment is None:
                return True
            if self._sync_each:
                if self._commit.settle(segment):
                    return True
                self._abandon()
                return False
            return self._sync(segment)
        finally:
            self._lock.release()

    def seal(self) -> None:
        """Seal the current segment now (the next event opens a new one)."""
        with self._lock:
            self._seal()

    def close(self) -> None:
        """Record the clean end, seal, stop the flusher; safe to call twice. A later append reopens."""
        with self._lock:
            self._append_closing_record()
            self._seal()
            self._stop.set()
            flusher, self._flusher = self._flusher, None
            if self._atexit_registered:
                atexit.unregister(self.close)
                self._atexit_registered = False
        if flusher is not None and flusher is not threading.current_thread():
            flusher.join(timeout=5)
        self._stop = threading.Event()
        self._drops.flush()

    def _append_closing_record(self) -> None:
        if self.closing_record is None or not self._unclosed:
            return
        try:
            self._append_locked(self.closing_record(self.chain.seq))  # made durable by the seal that follows
        except (SpoolError, EventError) as exc:
            log.error("auditlock: could not record the clean end of writer %s: %s", self.writer_id, exc)
        self._unclosed = False

    # --- background flusher --------------------------------------------------------------------------

    def _start_flusher(self) -> None:
        if self._flusher is not None:
            return
        self._flusher = threading.Thread(
            target=self._flush_loop, args=(self._stop,), name="auditlock-spool-flusher", daemon=True
        )
        self._flusher.start()

    def _flush_loop(self, stop: threading.Event) -> None:
        interval = self.config.flush_interval_ms / 1000
        while not stop.wait(interval):
            self._tick(stop)

    def _tick(self, stop: threading.Event) -> None:
        # fsync and the directory scan run outside the writer lock, so logging threads never wait for the disk.
        with self._sync_lock:
            with self._lock:
                if stop.is_set():
                    return
                segment = self._segment
                if segment is not None and monotonic() >= segment.seal_at:
                    self._seal()
                    segment = None
                sync_fd = os.dup(segment.fd) if segment is not None and self._dirty else -1
                self._dirty = False
            if sync_fd >= 0:
                self._background_sync(segment, sync_fd)
        self._measure_in_background()
        self._drops.flush()  # counts a full disk kept from their file: try again

    def _background_sync(self, segment: OpenSegment | None, fd: int) -> None:
        try:
            os.fdatasync(fd)
        except OSError as exc:
            with self._lock:
                self.stats["sync_failures"] += 1
                if self._segment is segment and segment is not None:
                    log.error("auditlock: fsync of %s failed (%s); abandoning the segment", segment.path,
                              exc.strerror)
                    self._abandon()
        finally:
            os.close(fd)

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.close)
            self._atexit_registered = True

    # --- fork ----------------------------------------------------------------------------------------

    def _before_fork(self) -> None:
        self._sync_lock.acquire()
        self._lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()
        self._sync_lock.release()

    def _after_fork_in_child(self) -> None:
        if self._segment is not None:
            self._segment.forget_after_fork()
        if self._atexit_registered:
            atexit.unregister(self.close)
        self._init_state()


_live_writers: weakref.WeakSet[SpoolWriter] = weakref.WeakSet()


def live_writers() -> list[SpoolWriter]:
    """Every writer of this process that is still referenced (`spool.shutdown` closes them all)."""
    return list(_live_writers)


def _for_every_writer(method: str) -> Callable[[], None]:
    """A fork hook calling `method` of every live writer."""
    def hook() -> None:
        for writer in list(_live_writers):
            getattr(writer, method)()
    return hook


os.register_at_fork(before=_for_every_writer("_before_fork"),
                    after_in_parent=_for_every_writer("_after_fork_in_parent"),
                    after_in_child=_for_every_writer("_after_fork_in_child"))
