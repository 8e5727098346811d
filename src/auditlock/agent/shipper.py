"""The shipping step: recover, batch, record intent, upload, confirm, delete — in that order, every time.

A segment is deleted only after the ledger says "confirmed", which is written only after S3 confirmed every
object of the batch. Failures that can clear are retried forever with backoff; nothing is ever dropped.

What cannot clear by retrying (see `agent.s3errors`): a request S3 rejected for what it is sets its whole batch
aside — the segments move to `quarantine/` with the reason, counted, logged and recorded in the trail — and the
next batch ships; a sink that cannot take anything (no bucket, no Object Lock, credentials, endpoint) raises
`SinkUnusableError` when `fail_fast` is set (`--once`), and otherwise is reported through `on_sink_problem`
(readiness) while the delivery is retried at the capped backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditlock.agent import failpoints
from auditlock.agent.backoff import Backoff, ErrorReporter, describe, error_kind
from auditlock.agent.batch import ArchiveObject, BuiltBatch, SealedSegment, build_objects, list_sealed, plan_batch
from auditlock.agent.digests import DigestChain
from auditlock.agent.ledger import CONFIRMED, DIGESTING, UPLOADING, Intent, Ledger, LedgerDamagedError
from auditlock.agent.ledger_recovery import LedgerRecovery
from auditlock.agent.metrics import AgentMetrics
from auditlock.agent.recovery import quarantine, recover_dead_writers
from auditlock.agent.s3errors import ObjectRejectedError, Permanence, SinkUnusableError, classify, sink_problem
from auditlock.agent.spool_guard import quarantine_unsafe_segments
from auditlock.agent.staging import STAGING_DIR, clear_staging
from auditlock.agent.trail import BATCH_SET_ASIDE, AgentTrail
from auditlock.agent.uploader import ALREADY_PRESENT, ObjectConflictError, Uploader
from auditlock.agent.witness import Witness
from auditlock.agent.witness_guard import WitnessGuard
from auditlock.config.model import Config
from auditlock.spool.files import largest_segment_bytes
from auditlock.spool.format import fsync_dir, parse_segment_name

log = logging.getLogger("auditlock.agent")


class DeadlineExceededError(Exception):
    """The shutdown grace period ran out before the work was done."""


class StopRequestedError(Exception):
    """A stop was requested while a delivery was being retried: leave the loop and drain with a deadline."""


@dataclass
class Backlog:
    """What is waiting in the spool."""

    segments: list[SealedSegment]
    bytes: int
    oldest_mtime: float | None


class Shipper:
    """Moves sealed segments from the spool into S3."""

    def __init__(self, config: Config, uploader: Uploader, metrics: AgentMetrics, ledger: Ledger,
                 digests: DigestChain, *, stop: threading.Event | None = None,
                 abort: threading.Event | None = None, heartbeat: Callable[[], None] | None = None) -> None:
        self.config = config
        self.spool = Path(config.spool.dir)
        self.uploader = uploader
        self.metrics = metrics
        self.ledger = ledger
        self.digests = digests
        self.stop = stop or threading.Event()
        self.abort = abort or threading.Event()
        # Called before every delivery attempt: an agent retrying through an S3 outage is alive, not stalled
        # (/healthz stays 200, so a liveness probe does not restart it in a loop).
        self.heartbeat = heartbeat or (lambda: None)
        self.backoff = Backoff(config.agent.backoff_initial_s, config.agent.backoff_max_s)
        self.errors = ErrorReporter()
        # What cannot clear by retrying (set by the agent): `--once` fails fast; the long-running agent reports it.
        self.fail_fast = False
        self.on_sink_problem: Callable[[str | None], None] = lambda _problem: None
        self.trail: AgentTrail | None = None
        # No segment larger than this is read (spool.files): none can take the agent's memory on every restart.
        self.max_segment_bytes = largest_segment_bytes(config.spool.segment_max_bytes, config.events.max_event_bytes)
        # What the agent saw of every segment (agent.witness): a segment that disagrees is set aside, not shipped.
        self.witness = WitnessGuard(Witness(ledger.state_dir, self.spool, self.max_segment_bytes,
                                            2 * config.events.max_event_bytes, metrics.witness_lag.observe),
                                    metrics, lambda: self.trail)
        # Objects are gzipped into files here, not in memory (agent.staging): memory stays flat with batch size.
        self.staging = ledger.state_dir / STAGING_DIR

    # --- one pass ------------------------------------------------------------------------------------

    def recover(self) -> None:
        """Seal dead writers' open segments; quarantine damaged ones."""
        refused = quarantine_unsafe_segments(self.spool, self.max_segment_bytes)
        report = recover_dead_writers(self.spool, self.max_segment_bytes)
        self.witness.quarantined(refused + report.quarantined)
        clear_staging(self.staging)  # what a crashed build left: objects are always rebuilt from their segments
        self.metrics.recovered.inc(len(report.sealed))
        self.metrics.quarantined.inc(len(report.quarantined) + len(refused))

    def backlog(self) -> Backlog:
        """Sealed segments waiting, their bytes and the oldest seal time."""
        segments = list_sealed(self.spool)
        return Backlog(segments, sum(s.size for s in segments), min((s.mtime for s in segments), default=None))

    def ship_due(self, *, force: bool, deadline: float | None = None) -> int:
        """Ship batches while one is due (full, or its oldest segment older than batch_max_age_s, or `force`).

        Returns the number of events shipped.
        """
        shipped = 0
        while True:
            backlog = self.backlog()
            if not backlog.segments or not (force or self._due(backlog)):
                return shipped
            batch = self.witness.screen(plan_batch(backlog.segments, self.config.sink.batch_max_bytes))
            if batch:
                shipped += self.ship_batch(batch, deadline)

    def _due(self, backlog: Backlog) -> bool:
        if backlog.bytes >= self.config.sink.batch_max_bytes:
            return True
        if backlog.oldest_mtime is None:
            return False
        return time.time() - backlog.oldest_mtime >= self.config.sink.batch_max_age_s

    def ship_batch(self, batch: list[SealedSegment], deadline: float | None = None) -> int:
        """Build, record, deliver and acknowledge one batch; returns the events shipped (0 if it was damaged)."""
        built = build_objects(batch, self.config.sink.prefix, self.config.retention.classes,
                              max_segment_bytes=self.max_segment_bytes, staging=self.staging)
        if built.damaged:
            for path, reason in built.damaged.items():
                quarantine(self.spool, path, f"damaged sealed segment: {reason}")
                self.metrics.quarantined.inc()
            self.witness.release(path.name for path in built.damaged)
            return 0
        names = tuple(s.path.name for s in batch)
        self.ledger.write(Intent(UPLOADING, names, _keys(built.objects)))
        failpoints.hit("after_ledger_intent")
        try:
            return self._deliver_and_ack(names, built, deadline)
        except ObjectRejectedError as exc:
            self._set_aside(names, exc)
            return 0

    def _deliver_and_ack(self, names: tuple[str, ...], built: BuiltBatch, deadline: float | None) -> int:
        for obj in built.objects:
            self._deliver_with_retry(obj, deadline)
        digest = self.digests.next_digest(built.objects, built.writers, self.witness.digest_record(names))
        self.ledger.write(Intent(DIGESTING, names, _keys(built.objects), (digest.key, digest.body)))
        failpoints.hit("before_digest_put")
        return self._finish(names, _keys(built.objects), digest, deadline)

    def _finish(self, names: tuple[str, ...], keys: tuple[tuple[str, str], ...], digest: ArchiveObject,
                deadline: float | None) -> int:
        self._deliver_with_retry(digest, deadline, count=False)
        self.digests.advance(digest.key, digest.sha256)
        self.witness.delivered(digest.body)
        self.ledger.write(Intent(CONFIRMED, names, keys))
        failpoints.hit("after_ledger_confirmed")
        self._delete_segments(names)
        failpoints.hit("before_ledger_clear")
        self.ledger.clear()
        clear_staging(self.staging)
        return digest.events

    def _deliver_with_retry(self, obj: ArchiveObject, deadline: float | None, *, count: bool = True) -> None:
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceededError(f"no time left to deliver {obj.key}")
            self.heartbeat()
            try:
                outcome = self.uploader.deliver(obj)
            except Exception as exc:  # every failure is retried or set aside; none may drop events
                self._failed(obj, exc, deadline)
                continue
            self.on_sink_problem(None)
            if count:
                self._delivered(obj, outcome)
            else:
                self.metrics.digests_shipped.inc()
            return

    def _failed(self, obj: ArchiveObject, exc: Exception, deadline: float | None) -> None:
        kind = "conflict" if isinstance(exc, ObjectConflictError) else error_kind(exc)
        self.metrics.errors.labels(kind=kind).inc()
        if isinstance(exc, ObjectConflictError):
            self.metrics.conflicts.inc()
        delay = self.backoff.next_delay()
        permanence = classify(exc)
        if permanence is Permanence.REJECTED:
            raise ObjectRejectedError(obj.key, exc) from exc
        if permanence is Permanence.SINK:
            exc, delay = self._sink_failed(exc)
        self.errors.failed(f"upload of {obj.key}", exc, delay)
        if deadline is not None and time.monotonic() + delay > deadline:
            raise DeadlineExceededError(f"upload of {obj.key} still failing: {describe(exc)}") from exc
        # Outside a drain a stop request ends the wait (then the drain runs with its deadline); in a drain only
        # a second signal (abort) does.
        waiter = self.stop if deadline is None else self.abort
        if waiter.wait(delay):
            if self.abort.is_set():
                raise DeadlineExceededError("aborted by a second signal")
            raise StopRequestedError

    def _sink_failed(self, exc: Exception) -> tuple[Exception, float]:
        """A failure of the whole sink: raise it (`fail_fast`), or report it and wait the capped backoff."""
        problem = SinkUnusableError(sink_problem(exc, self.uploader.bucket, self.config.sink.endpoint_url))
        if self.fail_fast:
            raise problem from exc
        self.on_sink_problem(str(problem))
        return problem, self.backoff.maximum

    def _set_aside(self, names: tuple[str, ...], exc: ObjectRejectedError) -> None:
        """Move a permanently rejected batch's segments to quarantine/ (never deleted), record it, move on."""
        reason = (f"set aside, not retried: {exc}. Fix the cause, then move the segment back into the spool "
                  "directory to ship it")
        moved = [name for name in names if (self.spool / name).exists()]
        for name in moved:
            quarantine(self.spool, self.spool / name, reason)
        self.metrics.segments_set_aside.inc(len(moved))
        self.witness.release(moved)
        self.ledger.clear()
        clear_staging(self.staging)
        self.backoff.reset()
        if self.trail is not None:
            self.trail.record(BATCH_SET_ASIDE, key=exc.key, code=exc.code, reason=str(exc), segments=list(names))

    def _delivered(self, obj: ArchiveObject, outcome: str) -> None:
        self.backoff.reset()
        self.errors.succeeded("upload")
        if outcome == ALREADY_PRESENT:
            self.metrics.objects_already_present.inc()
        self.metrics.objects_shipped.inc()
        self.metrics.events_shipped.inc(obj.events)
        self.metrics.bytes_shipped.inc(obj.size)
        self.metrics.last_success.set_to_current_time()

    def _delete_segments(self, names: tuple[str, ...]) -> None:
        for name in names:
            try:
                (self.spool / name).unlink()
            except FileNotFoundError:
                continue  # deleted before a crash, on the previous run
            failpoints.hit("during_delete")
        fsync_dir(self.spool)
        self.witness.release(names)  # after the deletes, before the ledger is cleared: a crash repeats it

    # --- resuming after a restart --------------------------------------------------------------------

    def resume(self, deadline: float | None = None) -> None:
        """Finish the batch the ledger names, exactly as it was planned (or recover from a damaged ledger); a batch
        S3 rejects for good is set aside."""
        try:
            intent = self.ledger.read()
        except LedgerDamagedError as exc:
            LedgerRecovery(self, exc, deadline).run()
            return
        if intent is None:
            return
        try:
            self._resume(intent, deadline)
        except ObjectRejectedError as exc:
            self._set_aside(intent.segments, exc)

    def _resume(self, intent: Intent, deadline: float | None) -> None:
        if intent.state == CONFIRMED:
            log.info("auditlock agent: resuming confirmed batch of %d segments: deleting them", len(intent.segments))
            self._delete_segments(intent.segments)
            self.ledger.clear()
            return
        if intent.state == DIGESTING and intent.digest is not None:
            log.info("auditlock agent: resuming batch of %d segments at its digest", len(intent.segments))
            self._finish(intent.segments, intent.objects, self.digests.as_object(*intent.digest), deadline)
            return
        self._resume_upload(intent, deadline)

    def _resume_upload(self, intent: Intent, deadline: float | None) -> None:
        segments = [self._sealed(name) for name in intent.segments]
        present = [s for s in segments if s is not None]
        if len(present) != len(segments):
            missing = [n for n, s in zip(intent.segments, segments, strict=True) if s is None]
            log.error("auditlock agent: ledger names segments that are gone (%s); they cannot be re-sent. "
                      "Their events are either in S3 already or were removed by hand", ", ".join(missing))
            self.metrics.errors.labels(kind="ledger_segment_missing").inc()
            self.ledger.clear()
            return
        built = build_objects(present, self.config.sink.prefix, self.config.retention.classes,
                              max_segment_bytes=self.max_segment_bytes, staging=self.staging)
        keys = _keys(built.objects)
        if built.damaged or keys != intent.objects:
            log.error("auditlock agent: the ledger's batch no longer rebuilds identically; shipping it afresh")
            self.ledger.clear()
            return
        log.info("auditlock agent: resuming batch of %d segments (%d objects)", len(present), len(keys))
        self._deliver_and_ack(intent.segments, built, deadline)

    def _sealed(self, name: str) -> SealedSegment | None:
        path = self.spool / name
        parsed = parse_segment_name(name)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        assert parsed is not None
        return SealedSegment(path, parsed, stat.st_size, stat.st_mtime)


def _keys(objects: list[ArchiveObject]) -> tuple[tuple[str, str], ...]:
    return tuple((o.key, o.content_sha256) for o in objects)
