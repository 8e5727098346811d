"""SIGKILL of a writing process at seeded random points, and what the spool holds afterwards.

Each run starts `tests/support/spool_child.py --mode crash` (small segments, so rotations are frequent) in its
own spool directory, counts the events it reports as returned, and SIGKILLs it after a seeded random number of
them (in the threaded runs, after that many events of its 8 threads together). Because the child keeps writing
while the kill is delivered, the kill lands anywhere in the write path: mid-append, between append and fsync,
mid-rotation (seal, rename, create), and with threads while one fdatasync covers other threads' lines. Several
children run at once.

The campaign runs once per module; each test then checks one property over every run and names the seeds
of the runs that broke it. A failing seed is reproduced with `_crash_once(tmp, 0, seed, durability, threads)`.
"""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditlock.spool.format import NEW_SUFFIX, parse_segment_name
from tests.support.spool_child import LineReader, SpoolContents, check_reported, scan_spool, start_child

SEED = 20261126
SYNC_RUNS = 200
UNSYNCED_RUNS = 24  # per durability mode, "group" and "process"
THREADED_RUNS = 48  # durability "sync" with THREADS threads sharing one writer (group commit)
THREADS = 8
PARALLEL = 4


@dataclass
class CrashRun:
    """One killed child: its plan, what it reported as returned, what the spool holds."""

    seed: int
    durability: str
    api: str
    kill_after: int
    returncode: int
    reported: list[dict[str, Any]]
    contents: SpoolContents
    other_files: dict[str, int]  # name -> size of every file that is not a segment
    threads: int = 1


def _kill_point(rng: random.Random) -> int:
    """After how many reported events to kill: some at start-up, some in the first segments, most later."""
    roll = rng.random()
    if roll < 0.08:
        return 0  # before or during start-up and the first segment's creation
    if roll < 0.35:
        return rng.randint(1, 16)  # within the first rotations
    return rng.randint(17, 240)


def _crash_once(root: Path, index: int, seed: int, durability: str, threads: int = 1) -> CrashRun:
    rng = random.Random(seed)
    kill_after = _kill_point(rng)
    api = rng.choice(["structlog", "core"]) if threads == 1 else "core"
    spool = root / f"{durability}-{threads}-{index:03d}"
    proc = start_child(spool, "--mode", "crash", "--durability", durability, "--api", api, "--count", "0",
                       "--threads", str(threads))
    try:
        reader = LineReader(proc)
        reader.until_count(kill_after, timeout=60)
        proc.kill()
        returncode = proc.wait(timeout=30)
        reported = reader.until_eof(timeout=30)  # every line written before the kill landed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    others = {path.name: path.stat().st_size for path in spool.glob("*") if path.name not in segment_names(spool)}
    return CrashRun(seed, durability, api, kill_after, returncode, reported, scan_spool(spool), others, threads)


def segment_names(spool: Path) -> set[str]:
    """Names of the segment files in a spool directory."""
    return {path.name for path in spool.glob("*.jsonl") if parse_segment_name(path.name) is not None}


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> list[CrashRun]:
    """Every crash run of the module: SYNC_RUNS with durability sync, UNSYNCED_RUNS each for group/process,
    THREADED_RUNS of THREADS threads with durability sync."""
    root = tmp_path_factory.mktemp("crash")
    plan: list[tuple[int, int, str, int]] = [(i, SEED + i, "sync", 1) for i in range(SYNC_RUNS)]
    plan += [(i, SEED + 10_000 + i, mode, 1) for mode in ("group", "process") for i in range(UNSYNCED_RUNS)]
    plan += [(i, SEED + 20_000 + i, "sync", THREADS) for i in range(THREADED_RUNS)]
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda item: _crash_once(root, *item), plan))


def _runs(campaign: list[CrashRun], durability: str, threads: int = 1) -> list[CrashRun]:
    return [run for run in campaign if run.durability == durability and run.threads == threads]


def _failures(runs: list[CrashRun], check: Callable[[CrashRun], str | None]) -> list[str]:
    """`check` over every run; the messages of the runs it faults, each naming the seed."""
    found = []
    for run in runs:
        try:
            problem = check(run)
        except AssertionError as exc:
            problem = str(exc)
        if problem:
            found.append(f"seed {run.seed} ({run.durability}, {run.api}, {run.threads} thread(s), kill after "
                         f"{run.kill_after}): {problem}")
    return found


def _returned_exactly_once(run: CrashRun) -> str | None:
    check_reported(run.contents, run.reported)
    return None


def _only_in_flight_unreported(run: CrashRun) -> str | None:
    writers = {event["writer"] for event in run.contents.events}
    if len(writers) > 1:
        return f"{len(writers)} writers in one process's spool"
    seqs = [event["seq"] for event in run.contents.events]
    reported = len(run.reported)
    if sorted(seqs) != list(range(len(seqs))):
        return f"spool seqs are not 0..n-1: {sorted(seqs)[:10]}..."
    if not reported <= len(seqs) <= reported + run.threads:  # one event in flight per thread
        return f"{reported} events returned but {len(seqs)} in the spool"
    return None


def _no_damage(run: CrashRun) -> str | None:
    problems = run.contents.damage() + run.contents.foreign
    return "; ".join(problems) or None


def _chain_intact(run: CrashRun) -> str | None:
    return "; ".join(run.contents.chain_breaks()) or None


def _only_creation_debris(run: CrashRun) -> str | None:
    if len(run.other_files) <= 1 and all(name.endswith(NEW_SUFFIX) and size == 0
                                         for name, size in run.other_files.items()):
        return None
    return f"unexpected files: {run.other_files}"


class TestSigkillDuringSyncWrites:
    """A writer with durability "sync" SIGKILLed at random points."""

    def test_campaign_kills_many_writers_at_varied_points(self, campaign: list[CrashRun]) -> None:
        """At least 200 sync writers are SIGKILLed, at start-up, mid-segment and after many rotations."""
        runs = _runs(campaign, "sync")
        assert len(runs) >= 200
        assert all(run.returncode == -signal.SIGKILL for run in runs), [run.returncode for run in runs]
        assert any(not run.reported for run in runs), "no run was killed before its first event returned"
        assert sum(len(run.contents.scans) >= 5 for run in runs) >= 50, "too few runs rotated segments"
        open_left = sum(any(scan.name.is_open for scan in run.contents.scans) for run in runs)
        assert open_left >= 100, "too few runs were killed with an open segment"

    def test_every_returned_event_is_in_the_spool_exactly_once(self, campaign: list[CrashRun]) -> None:
        """A SIGKILLed sync writer never loses or duplicates an event whose logging call returned."""
        failures = _failures(_runs(campaign, "sync"), _returned_exactly_once)
        assert not failures, "\n".join(failures)

    def test_only_the_event_in_flight_may_be_unreported(self, campaign: list[CrashRun]) -> None:
        """Beyond the returned events, the spool holds at most the one event in flight when the kill landed."""
        failures = _failures(_runs(campaign, "sync"), _only_in_flight_unreported)
        assert not failures, "\n".join(failures)

    def test_at_most_the_last_line_of_a_segment_is_torn(self, campaign: list[CrashRun]) -> None:
        """No segment has a damaged line: only a segment's last line may be torn, and lines are the file's writer's."""
        failures = _failures(_runs(campaign, "sync"), _no_damage)
        assert not failures, "\n".join(failures)

    def test_a_kill_while_creating_a_segment_leaves_only_empty_debris(self, campaign: list[CrashRun]) -> None:
        """Apart from segments, a kill leaves at most one empty `.open.jsonl.new` file (a segment being created)."""
        failures = _failures(_runs(campaign, "sync"), _only_creation_debris)
        assert not failures, "\n".join(failures)

    def test_seq_and_prev_chain_continue_across_segments(self, campaign: list[CrashRun]) -> None:
        """The writer's chain runs from seq 0 (prev = zeros) through every segment without a gap or break."""
        failures = _failures(_runs(campaign, "sync"), _chain_intact)
        assert not failures, "\n".join(failures)


class TestSigkillWithoutFsyncPerEvent:
    """Durability "group" and "process" write before returning, so a process crash loses nothing either."""

    @pytest.mark.parametrize("durability", ["group", "process"])
    def test_returned_events_survive_a_process_crash(self, campaign: list[CrashRun], durability: str) -> None:
        """A SIGKILLed group/process writer keeps every returned event: the page cache outlives the process."""
        runs = _runs(campaign, durability)
        assert len(runs) == UNSYNCED_RUNS
        checks = (_returned_exactly_once, _only_in_flight_unreported, _no_damage, _chain_intact)
        failures = [failure for check in checks for failure in _failures(runs, check)]
        assert not failures, "\n".join(failures)


class TestSigkillDuringConcurrentSyncWrites:
    """8 threads share one "sync" writer (their fdatasyncs grouped) and the process is SIGKILLed at random points."""

    def test_campaign_kills_many_threaded_writers_at_varied_points(self, campaign: list[CrashRun]) -> None:
        """Every threaded run is SIGKILLed; some before the first event returned, many after rotations."""
        runs = _runs(campaign, "sync", THREADS)
        assert len(runs) == THREADED_RUNS
        assert all(run.returncode == -signal.SIGKILL for run in runs), [run.returncode for run in runs]
        assert any(not run.reported for run in runs), "no run was killed before its first event returned"
        assert sum(len(run.contents.scans) >= 5 for run in runs) >= THREADED_RUNS // 4, "too few rotations"
        assert all(len({line["n"] // 10**10 for line in run.reported}) > 1 for run in runs if len(run.reported) > 40)

    def test_every_returned_event_is_in_the_spool_exactly_once(self, campaign: list[CrashRun]) -> None:
        """No event whose logging call returned is lost or duplicated, whichever thread's fdatasync covered it."""
        failures = _failures(_runs(campaign, "sync", THREADS), _returned_exactly_once)
        assert not failures, "\n".join(failures)

    def test_only_the_events_in_flight_may_be_unreported(self, campaign: list[CrashRun]) -> None:
        """Beyond the returned events, the spool holds at most one event in flight per thread; seqs have no gap."""
        failures = _failures(_runs(campaign, "sync", THREADS), _only_in_flight_unreported)
        assert not failures, "\n".join(failures)

    def test_segments_are_undamaged_and_the_chain_continues(self, campaign: list[CrashRun]) -> None:
        """Only a segment's last line may be torn, the one chain runs through every segment, no debris but a `.new`."""
        checks = (_no_damage, _chain_intact, _only_creation_debris)
        failures = [failure for check in checks for failure in _failures(_runs(campaign, "sync", THREADS), check)]
        assert not failures, "\n".join(failures)
