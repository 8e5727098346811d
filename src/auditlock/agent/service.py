"""The agent process: one per spool; scan first, then watch; ship; drain on SIGTERM within the grace period."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from auditlock.agent import signals
from auditlock.agent.digests import DigestChain
from auditlock.agent.identity import IdentityCheck, ensure_private_dir, refuse_foreign_sticky_spool
from auditlock.agent.ledger import Ledger
from auditlock.agent.metrics import AgentMetrics
from auditlock.agent.open_segments import OpenSegmentsWaiting, open_segments_waiting
from auditlock.agent.preflight import SinkGate
from auditlock.agent.shipper import DeadlineExceededError, Shipper, StopRequestedError
from auditlock.agent.trail import AgentTrail, FlooredObjects
from auditlock.agent.uploader import Uploader
from auditlock.archive import layout
from auditlock.archive.client import make_s3_client
from auditlock.config.model import Config
from auditlock.errors import AuditlockError, SpoolError
from auditlock.sidecar.health import HealthServer
from auditlock.spool.files import refuse_world_writable
from auditlock.spool.format import ensure_spool_dir, parse_segment_name
from auditlock.spool.reader import first_occurred_at
from auditlock.spool.space import spool_size

log = logging.getLogger("auditlock.agent")

AGENT_LOCK_FILE = ".agent.lock"
STATE_DIR = ".agent"
GAUGE_INTERVAL_MAX_S = 5.0  # the gauges move at least this often, whatever the shipping loop is doing


class AgentAlreadyRunningError(AuditlockError):
    """Another agent holds this spool's lock."""


@dataclass
class DrainResult:
    """What a drain left behind (segments of live writers are not counted)."""

    events_shipped: int
    segments_left: int
    bytes_left: int
    open_segments: OpenSegmentsWaiting = field(default_factory=OpenSegmentsWaiting)


@contextlib.contextmanager
def agent_lock(spool: Path) -> Iterator[None]:
    """Hold the spool's single-agent lock, or raise `AgentAlreadyRunningError` naming the holder."""
    ensure_spool_dir(spool)
    refuse_world_writable(spool)
    refuse_foreign_sticky_spool(spool)
    path = spool / AGENT_LOCK_FILE
    fd = _open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise AgentAlreadyRunningError(
                f"another auditlock agent (pid {holder}) is already shipping spool {spool}; run one agent per spool"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _open_lock_file(path: Path) -> int:
    """The agent lock file, never through a symlink (it is truncated and written) and only a regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise SpoolError(f"cannot open the agent lock {path}: {exc.strerror} (a symbolic link?); remove it and "
                         "start the agent again") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SpoolError(f"the agent lock {path} is not a regular file; remove it and start the agent again")
    return fd


class Agent:
    """Wires spool, shipper, watcher, signals and the HTTP endpoint together."""

    def __init__(self, config: Config, *, serve_http: bool = True) -> None:
        self.config = config
        self.spool = Path(config.spool.dir)
        self.metrics = AgentMetrics()
        self.metrics.watch_app_drops(self.spool)
        self.stop = threading.Event()
        self.abort = threading.Event()
        self.wake = threading.Event()
        state_dir = ensure_private_dir(config.agent.state_dir or self.spool / STATE_DIR, "its state directory")
        self.identity = IdentityCheck(self.spool, self.metrics.registry)  # warns if the writers are the agent's user
        trail = AgentTrail(config)
        uploader = Uploader(config.sink, config.retention.classes, make_s3_client(config.sink),
                            on_floored=FlooredObjects(self.metrics, trail, config.retention.classes))
        digests = DigestChain(state_dir, config.retention.classes, config.sink.prefix, _signing_key(config))
        digests.record_app_drops(self.spool)
        self.http = (HealthServer(self.metrics, config.agent.http_host, config.agent.http_port, name="agent")
                     if serve_http else None)
        self.shipper = Shipper(config, uploader, self.metrics, Ledger(state_dir), digests, stop=self.stop,
                               abort=self.abort, heartbeat=self.http.beat if self.http is not None else None)
        self.shipper.trail = trail
        self.shipper.on_sink_problem = self._sink_problem
        self.sink = SinkGate(uploader, config.sink.endpoint_url, config.agent, self.metrics,
                             on_problem=self._sink_problem, on_transient=self._ready_while_s3_fails)
        self._last_pressure_warning = float("-inf")
        self._first_event_at: dict[str, str] = {}
        self._gauges_lock = threading.Lock()

    def run_once(self) -> DrainResult:
        """Drain the spool (finish the ledger's batch, recover dead writers, ship everything sealed) and return.

        A sink that cannot take anything raises `SinkUnusableError` (before any PUT if the bucket check finds it).
        """
        early = signals.take_early()
        if early:
            log.info("auditlock agent: %s received during start-up; --once exits without shipping",
                     signal.Signals(early[0]).name)
            backlog = self.shipper.backlog()
            return DrainResult(0, len(backlog.segments), backlog.bytes)
        signals.restore_defaults()
        self.shipper.fail_fast = True
        self.sink.wait(self.stop, fail_fast=True)
        self.shipper.resume()
        return self.drain(deadline=None)

    def run(self) -> DrainResult:
        """Run until SIGTERM/SIGINT, then drain within the grace period."""
        self._install_signal_handlers()
        for signum in signals.take_early():
            log.info("auditlock agent: %s received during start-up", signal.Signals(signum).name)
            self._request_stop(signum, None)
        if self.http is not None:
            self.http.start()
            log.info("auditlock agent: listening", extra={"host": self.config.agent.http_host, "port": self.http.port})
        watcher = threading.Thread(target=self._watch, name="auditlock-agent-watch", daemon=True)
        watcher.start()  # watch before the first scan, so nothing that arrives in between is missed
        threading.Thread(target=self._tick_gauges, name="auditlock-agent-gauges", daemon=True).start()
        threading.Thread(target=self.shipper.witness.witness.follow, args=(self.stop,), name="auditlock-agent-witness",
                         daemon=True).start()
        try:
            self.sink.wait(self.stop, fail_fast=False)
            self.shipper.resume()
            self._loop()
        except StopRequestedError:
            log.info("auditlock agent: stop requested while retrying; draining with the grace period")
        finally:
            self.wake.set()
        deadline = time.monotonic() + self.config.agent.grace_period_s
        result = self.drain(deadline=deadline)
        if self.http is not None:
            self.http.stop()
        return result

    def _sink_problem(self, problem: str | None) -> None:
        if self.http is not None:
            self.http.problem = problem

    def _ready_while_s3_fails(self) -> None:
        if self.http is not None and not self.stop.is_set():
            self.http.ready = True

    def _loop(self) -> None:
        if self.http is not None:
            self.http.ready = True
        while not self.stop.is_set():
            self._pass(force=False)
            self.wake.wait(self._next_wait())
            self.wake.clear()

    def _pass(self, *, force: bool, deadline: float | None = None) -> int:
        if self.http is not None:
            self.http.beat()
        self.identity.check()  # before shipping: afterwards the writers' segments may be gone
        self.shipper.recover()
        shipped = self.shipper.ship_due(force=force, deadline=deadline)
        self._update_gauges()
        return shipped

    def _next_wait(self) -> float:
        backlog = self.shipper.backlog()
        wait = self.config.agent.rescan_interval_s
        if backlog.oldest_mtime is not None:
            due_in = backlog.oldest_mtime + self.config.sink.batch_max_age_s - time.time()
            wait = min(wait, max(due_in, 0.01))
        return wait

    def drain(self, deadline: float | None) -> DrainResult:
        """Ship everything sealed plus what dead writers left; report what is left if the deadline passes."""
        if self.http is not None:
            self.http.ready = False
        if deadline is not None:
            # Requests must fit in the grace period too: short timeouts, no hidden botocore retries.
            time_left = max(deadline - time.monotonic(), 1.0)
            self.shipper.uploader.client = make_s3_client(self.config.sink, read_timeout=time_left / 2, attempts=1)
        shipped = 0
        try:
            self.sink.wait(self.abort, fail_fast=self.shipper.fail_fast, deadline=deadline)  # before any PUT
            self.shipper.resume(deadline)  # a batch (or a ledger recovery) a stop interrupted: finish it first
            shipped = self._pass(force=True, deadline=deadline)
        except DeadlineExceededError as exc:
            log.warning("auditlock agent: grace period over before the spool drained: %s", exc)
        backlog = self.shipper.backlog()
        result = DrainResult(shipped, len(backlog.segments), backlog.bytes, self._open_segments())
        if result.segments_left:
            log.warning("auditlock agent: stopping with %d segments (%d bytes) still in the spool; they ship on the "
                        "next start", result.segments_left, result.bytes_left)
        if result.open_segments.segments:
            log.info(result.open_segments.describe(self.config.spool.segment_max_age_s))
        return result

    def _open_segments(self) -> OpenSegmentsWaiting:
        spool = self.config.spool
        return open_segments_waiting(self.spool, spool.segment_max_age_s, spool.flush_interval_ms / 1000)

    def _watch(self) -> None:
        try:
            import watchfiles  # noqa: PLC0415 - `agent --once` never watches (~20 ms of start-up)

            for _changes in watchfiles.watch(self.spool, stop_event=self.stop, debounce=50, step=20,
                                             recursive=False, rust_timeout=1000, yield_on_timeout=False):
                self.wake.set()
        except Exception as exc:  # the periodic rescan still ships; say why the watcher is gone
            log.error("auditlock agent: spool watcher stopped (%s); relying on rescans every %.0f s", exc,
                      self.config.agent.rescan_interval_s)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.abort.set()  # a second signal: stop retrying now
        log.info("auditlock agent: %s received, draining the spool", signal.Signals(signum).name)
        self.stop.set()
        self.wake.set()

    def _oldest_event_age(self) -> float:
        """Seconds since the oldest `occurred_at` still in the spool (first lines, cached per segment)."""
        firsts = {}
        for path in self.spool.glob("*.jsonl"):
            if parse_segment_name(path.name) is None:
                continue  # not a segment: never read
            first = self._first_event_at.get(path.name) or first_occurred_at(path)
            if first:
                firsts[path.name] = first
        self._first_event_at = firsts
        if not firsts:
            return 0.0
        oldest = layout.parse_occurred_at(min(firsts.values()))
        return max((dt.datetime.now(dt.UTC) - oldest).total_seconds(), 0.0)

    def _tick_gauges(self) -> None:
        """Refresh the spool gauges on their own clock: a pass retrying through an S3 outage never returns, and
        the alerts on backlog, oldest event age and spool usage must fire during exactly that outage."""
        interval = min(self.config.agent.rescan_interval_s, GAUGE_INTERVAL_MAX_S)
        while not self.stop.wait(interval):
            try:
                self._update_gauges()
            except OSError as exc:  # a vanished or unreadable spool must not end the ticker
                log.error("auditlock agent: could not refresh the spool gauges: %s", exc)

    def _update_gauges(self) -> None:
        with self._gauges_lock:
            self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        backlog = self.shipper.backlog()
        self.metrics.backlog_bytes.set(backlog.bytes)
        self.metrics.backlog_segments.set(len(backlog.segments))
        self.metrics.oldest_event_age.set(self._oldest_event_age())
        usage = spool_size(self.spool) / self.config.spool.max_bytes
        self.metrics.spool_usage.set(usage)
        if usage >= self.config.spool.warn_fraction and time.monotonic() - self._last_pressure_warning > 30:
            self._last_pressure_warning = time.monotonic()
            log.warning("auditlock agent: spool %s is at %.0f%% of max_bytes; at 100%% logging calls fail",
                        self.spool, usage * 100)


def _signing_key(config: Config) -> bytes | None:
    path = config.agent.signing_key_file
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AuditlockError(f"[agent] signing_key_file: cannot read {path}: {exc.strerror}") from exc
