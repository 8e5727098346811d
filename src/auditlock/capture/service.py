"""`auditlock capture`: the loop that turns a PostgreSQL slot's committed row changes into spool events.

One pass (`Capture.batch`): peek the slot up to the current WAL position (whole transactions, about
`[capture] batch_changes` changes) → one event per change through `ChangeRecorder` into the staging writer →
make the pass durable (`capture.position`: fsync, position file, publish to the spool, advance the slot). A pass
that found nothing advances the slot to where it looked (the WAL flush position), so a quiet mapped table does not
hold WAL back.
SIGTERM/SIGINT stop at the next change (a transaction may end half-written: the position records where), make what
was written durable, close the writer (its `auditlock.writer_closed` record) and publish; a query the server is still
running at half of `[capture] grace_period_s` is cancelled, so the stop fits in the grace period. Failures of the
database or the spool are retried with capped backoff; readiness says why meanwhile.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from auditlock.capture import database, failpoints
from auditlock.capture.metrics import CaptureMetrics
from auditlock.capture.pgoutput import PgoutputError, decode, format_lsn
from auditlock.capture.position import START, CaptureError, Position, PositionFile
from auditlock.capture.recorder import CAPTURE_FIELDS, DDL_FIELDS, TRUNCATE_FIELDS, ChangeRecorder
from auditlock.capture.records import CapturedRecords
from auditlock.capture.staging import Staging
from auditlock.capture.tables import captured_tables, event_types_of, with_catalog
from auditlock.config.model import Config
from auditlock.errors import SpoolError
from auditlock.handler import event_types
from auditlock.handler.core import AuditCore
from auditlock.handler.event_types import CAPTURE_GAP
from auditlock.sidecar.health import HealthServer
from auditlock.spool.writer import SpoolWriter

log = logging.getLogger("auditlock.capture")
STAGING_DIR = ".capture"
_BACKOFF_MAX_S = 30.0


class Capture:
    """Capture of one slot into one spool (hold `staging.locked()` around `start()` … `close()`)."""

    def __init__(self, config: Config, *, serve_http: bool = True) -> None:
        self.config = config
        self.settings = config.capture
        self.tables = captured_tables(config)
        spool = Path(config.spool.dir)
        state_dir = self.settings.state_dir or spool / STAGING_DIR
        self.staging = Staging(state_dir, spool)
        self.positions = PositionFile(state_dir, self.settings.slot)
        self.metrics = CaptureMetrics()
        self.http = (HealthServer(self.metrics, self.settings.http_host, self.settings.http_port, name="capture",
                                  ready=True, problem="starting") if serve_http else None)
        self.stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._core: AuditCore | None = None
        self._recorder: ChangeRecorder | None = None
        self._records: CapturedRecords | None = None
        self._durable: Position = START
        self._events_counted = 0
        self._slot_lsn: int | None = None
        self._caught_up_at = time.monotonic()
        _allow_capture_fields([t for table in self.tables.values() for t in event_types_of(table)])

    # -- start and stop ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, refuse to start on any database problem, recover staging, resume from the durable position."""
        conn = self._connect()
        problems = database.check_ready(conn, self.settings.slot, self.settings.publication, self.tables,
                                        attribution=self.settings.attribution)
        if problems:
            raise CaptureError("auditlock capture cannot start:\n" + "\n".join(f"  - {p}" for p in problems))
        self.tables = with_catalog(self.tables, database.primary_keys(conn, self.tables),
                                   database.table_oids(conn, self.tables))
        saved = self.positions.read()
        position = (saved.position if saved else START).later(self.staging.recover())
        self._slot_lsn = saved.slot_lsn if saved else None
        self.positions.write(position, self._slot_lsn)
        self._durable = position
        self.staging.publish()
        writer = SpoolWriter(replace(self.config.spool, dir=self.staging.directory, durability="group",
                                     on_error="raise"), max_event_bytes=self.config.events.max_event_bytes)
        self._core = AuditCore(self.config, writer=writer)
        self._records = CapturedRecords(self._core.build, self._core.changes, self.tables)
        self._recorder = ChangeRecorder(self.tables, self._write, position, trusted_roles=database.trusted_roles(
            conn, self.settings.app_roles, self.settings.attribution))
        self._record_gap(conn, known=saved is not None and saved.slot_lsn is not None)
        if position.change_index is None and position.end_lsn is not None:
            self._advance(conn, position.end_lsn)

    def _record_gap(self, conn: psycopg.Connection[Any], *, known: bool) -> None:
        """The slot is beyond where capture moved it (moved by hand, or lost and created again): record the gap.

        Without a recorded slot position (the first start, or one killed before it wrote one) the slot's position
        is adopted: there is nothing to compare it with.
        """
        state = database.slot_state(conn, self.settings.slot)
        if state is None or not known or state.confirmed_flush_lsn <= (self._slot_lsn or 0):
            if state is not None and self._slot_lsn is None:
                self._slot_lsn = state.confirmed_flush_lsn
                self.positions.write(self._durable, self._slot_lsn)
            return
        assert self._core is not None
        fields = {"actor_id": f"svc:{self.config.service}", "slot": self.settings.slot,
                  "from_lsn": format_lsn(self._slot_lsn or 0), "to_lsn": format_lsn(state.confirmed_flush_lsn),
                  "reason": "the slot's confirmed position is beyond where capture left it: it was advanced by "
                            "someone else, or dropped (lost) and created again; row changes in between were not "
                            "captured"}
        self._core.writer.append(self._core.build(CAPTURE_GAP, fields))
        if not self._core.writer.flush():
            raise SpoolError(f"auditlock capture: could not fsync staging segment in {self.staging.directory}")
        log.error("auditlock capture: gap in the slot recorded", extra={k: fields[k] for k in ("from_lsn", "to_lsn")})
        self._slot_lsn = state.confirmed_flush_lsn
        self.positions.write(self._durable, self._slot_lsn)

    def _advance(self, conn: psycopg.Connection[Any], lsn: int) -> None:
        """Record the slot's new position first, then move the slot (so a crash never looks like a gap)."""
        if self._slot_lsn is not None and lsn <= self._slot_lsn:
            return
        self._slot_lsn = lsn
        self.positions.write(self._durable, lsn)
        database.advance(conn, self.settings.slot, lsn)

    def close(self) -> None:
        """Make what was written durable, record the writer's clean end, publish; close the connection."""
        if self._core is not None and self._recorder is not None:
            self._make_durable(advance=False)
            self._core.writer.close()
            self.staging.publish()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = database.connect(self.settings.load_dsn())
        return self._conn

    # -- passes -----------------------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Capture everything committed so far, then stop; returns the number of events written."""
        recorder = self._started()
        database.flush_committed(self._connect())
        while not self.stop.is_set() and self.batch():
            pass
        return recorder.events

    def run(self) -> int:
        """Capture until SIGTERM/SIGINT; returns the number of events written."""
        recorder = self._started()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._request_stop)
        if self.http is not None:
            self.http.start()
            log.info("auditlock capture: listening", extra={"host": self.settings.http_host, "port": self.http.port})
        backoff = 0.0
        while not self.stop.is_set():
            try:
                started = time.monotonic()
                found = self.batch()
                backoff = 0.0
                if self.http is not None:
                    self.http.problem = None
                    self.http.beat()
                self.stop.wait(self.pause_after(found, started))
            except (psycopg.Error, SpoolError, OSError) as exc:
                if self.stop.is_set() and isinstance(exc, psycopg.errors.QueryCanceled):
                    log.info("auditlock capture: the running query was cancelled; stopping")
                    break
                backoff = min(max(backoff * 2, 0.5), _BACKOFF_MAX_S)
                self._failed(exc)
                self.stop.wait(backoff)
        if self.http is not None:
            self.http.stop()
        return recorder.events

    def batch(self) -> int:
        """One pass: peek, record, make durable; returns how many pgoutput messages it took."""
        recorder = self._started()
        conn = self._connect()
        upto = database.flushed_lsn(conn)
        recorder.new_stream()
        taken = 0
        for data in database.peek(conn, self.settings.slot, self.settings.publication, upto,
                                  self.settings.batch_changes):
            recorder.take(decode(data))
            taken += 1
            if self.stop.is_set():
                break
        self._make_durable(advance=True)
        self._gauges(conn, caught_up=taken == 0)
        if taken == 0:
            self._advance(conn, upto)
        return taken

    def pause_after(self, taken: int, started: float) -> float:
        """Seconds to wait after a pass that took `taken` messages and began at `started` (`time.monotonic()`).

        No pause after a full pass (`batch_changes`: more is waiting). After any other — caught up, whether it found
        changes or not — the rest of `poll_interval_s` since it began: every pass makes the server decode again
        from the slot's restart point, so passes chasing a trickle of changes cost the database far more than the
        changes themselves (docs/capture-postgres.md, "Speed"); a change waits at most `poll_interval_s` more.
        """
        if taken >= self.settings.batch_changes:
            return 0.0
        return max(0.0, self.settings.poll_interval_s - (time.monotonic() - started))

    def _write(self, event_type: str, fields: dict[str, Any], shared: tuple[Any, ...]) -> None:
        assert self._core is not None
        assert self._records is not None
        self._core.writer.append(self._records.build(event_type, fields, shared))
        failpoints.hit("after_append")
        if fields.get("change_index"):
            failpoints.hit("mid_transaction")

    def _make_durable(self, *, advance: bool) -> None:
        recorder, core = self._started(), self._core
        assert core is not None
        if recorder.written != self._durable:
            if not core.writer.flush():
                raise SpoolError(f"auditlock capture: could not fsync staging segment in {self.staging.directory}")
            failpoints.hit("after_flush")
            self.positions.write(recorder.written, self._slot_lsn)
            failpoints.hit("after_position")
            self.metrics.events.inc(recorder.events - self._events_counted)
            self._events_counted = recorder.events
            self._durable = recorder.written
        self.staging.publish()
        failpoints.hit("after_publish")
        if advance and recorder.committed is not None:
            self._advance(self._connect(), recorder.committed.end_lsn)
            self.metrics.last_commit.set(recorder.committed.commit_time.timestamp())
            failpoints.hit("after_advance")

    def _gauges(self, conn: psycopg.Connection[Any], *, caught_up: bool) -> None:
        now = time.monotonic()
        if caught_up:
            self._caught_up_at = now
        self.metrics.lag_seconds.set(now - self._caught_up_at)
        behind = database.wal_bytes_behind(conn, self.settings.slot)
        if behind is not None:
            self.metrics.lag_bytes.set(behind)

    def _started(self) -> ChangeRecorder:
        if self._recorder is None:
            raise CaptureError("auditlock capture: start() first")
        return self._recorder

    def _failed(self, exc: BaseException) -> None:
        kind = "database" if isinstance(exc, psycopg.Error) else "spool"
        self.metrics.errors.labels(kind=kind).inc()
        message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.error("auditlock capture: pass failed, retrying: %s", message, extra={"kind": kind})
        if self.http is not None:
            self.http.problem = f"{kind}: {message}"
        if isinstance(exc, psycopg.Error) and self._conn is not None:
            self._conn.close()

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("auditlock capture: %s received; stopping", signal.Signals(signum).name)
        if not self.stop.is_set():
            # A peek the server is still decoding would hold the stop back: cancel it at half the grace period,
            # which leaves the other half to make the written changes durable and publish them.
            timer = threading.Timer(self.settings.grace_period_s / 2, self._cancel_query)
            timer.daemon = True
            timer.start()
        self.stop.set()

    def _cancel_query(self) -> None:
        conn = self._conn
        if conn is not None and not conn.closed:
            log.warning("auditlock capture: cancelling the running query to stop within the grace period")
            conn.cancel()


def _allow_capture_fields(types: list[str]) -> None:
    for event_type in types:
        extra = TRUNCATE_FIELDS if event_type.endswith(".truncated") else frozenset()
        extra |= DDL_FIELDS if event_type.endswith(".schema_changed") else frozenset()
        event_types.register_standard_fields(event_type, CAPTURE_FIELDS | extra)


__all__ = ["Capture", "CaptureError", "PgoutputError"]
