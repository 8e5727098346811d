"""Exactly once across crashes: `auditlock capture` SIGKILLed again and again under a concurrent write load, then
every committed row change is in the spool exactly once.

Kills land at each failpoint of the exactly-once protocol (`capture.failpoints`: after an append, mid-transaction,
after the fsync, after the position file, after publishing, after the slot advance), at a seeded pass count, and
from outside at a moment chosen by what the process has done (its position file changing), never by a sleep.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import psycopg

from auditlock.capture.failpoints import ENV as FAILPOINT_ENV
from auditlock.capture.failpoints import NAMES as FAILPOINTS
from tests.support.capture_env import CaptureEnv
from tests.support.waiting import wait_for

KILLS = int(os.environ.get("AUDITLOCK_TEST_CAPTURE_KILLS", "100"))
LANES = 4  # independent captures (own slot, spool and staging) killed side by side: 4 checks, a quarter the time
PERMITS_PER_RUN = 6  # transactions the load may commit per capture start: concurrent, yet bounded
SEED = int(os.environ.get("AUDITLOCK_TEST_CAPTURE_SEED", "18"))


class WriteLoad:
    """Small transactions in a thread: txn i inserts rows 2i and 2i+1 and updates row 2i-2; committed ones counted."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.committed = 0
        self.stop = threading.Event()
        self._permits = threading.Semaphore(PERMITS_PER_RUN)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="capture-write-load", daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                i = 0
                while not self.stop.is_set():
                    if not self._permits.acquire(timeout=0.1):
                        continue
                    with conn.transaction():
                        conn.execute("INSERT INTO orders (id, status, total) VALUES (%s, 'new', 0), (%s, 'new', 0)",
                                     (2 * i, 2 * i + 1))
                        if i:
                            conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (2 * i - 2,))
                    i += 1
                    self.committed = i
        except BaseException as exc:  # reported by the test
            self.error = exc

    def allow(self, transactions: int) -> bool:
        """Let the load commit `transactions` more (returns False, for use inside a wait condition)."""
        for _ in range(transactions):
            self._permits.release()
        return False

    def expected(self) -> Counter[tuple[str, str]]:
        """Every row change of the committed transactions, once."""
        changes: Counter[tuple[str, str]] = Counter()
        for i in range(self.committed):
            changes[("order.created", str(2 * i))] += 1
            changes[("order.created", str(2 * i + 1))] += 1
            if i:
                changes[("order.updated", str(2 * i - 2))] += 1
        return changes


def start_capture(env: CaptureEnv, failpoint: str | None) -> subprocess.Popen[bytes]:
    """A long-running `auditlock capture`, armed with a failpoint or not."""
    extra = {FAILPOINT_ENV: failpoint} if failpoint else {}
    return subprocess.Popen([sys.executable, "-m", "auditlock", "capture", "--config", str(env.config_path)],
                            env=env.env(**extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def position_text(env: CaptureEnv) -> bytes:
    """The position file's bytes (empty before the first)."""
    path: Path = env.spool / ".capture" / "position.json"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


class TestKillMatrix:
    """SIGKILL at every step in between, ≥100 times, under load: each committed change exactly once."""

    def test_every_committed_change_exactly_once(self, capture_env: CaptureEnv) -> None:
        """100 kills (failpoints and external) while transactions commit; then each spool holds each change once."""
        lanes = [CaptureEnv(capture_env.server, capture_env.database, capture_env.root / f"lane{n}", slot=f"lane{n}")
                 for n in range(LANES)]
        for lane in lanes:
            lane.root.mkdir()
            lane.write_config()
            lane.setup()
        load = WriteLoad(capture_env.dsn)
        load.thread.start()
        failures: list[BaseException] = []
        threads = [threading.Thread(target=self._lane, args=(lane, random.Random(SEED + n), load, failures))
                   for n, lane in enumerate(lanes)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            load.stop.set()
            load.thread.join(timeout=60)
        assert not failures, failures[0]
        assert load.error is None, load.error
        assert load.committed > 50
        for lane in lanes:
            lane.capture("--once")
            self._check_exactly_once(lane, load.expected())

    def _lane(self, env: CaptureEnv, rng: random.Random, load: WriteLoad, failures: list[BaseException]) -> None:
        try:
            for _ in range(-(-KILLS // LANES)):
                load.allow(PERMITS_PER_RUN)
                self._one_run(env, rng, load)
        except BaseException as exc:  # re-raised by the test
            failures.append(exc)

    def _check_exactly_once(self, env: CaptureEnv, expected: Counter[tuple[str, str]]) -> None:
        found = Counter((e["event_type"], e["target_id"]) for e in env.events())
        twice = {k: n for k, n in found.items() if n > 1}
        missing = set(expected) - set(found)
        assert not twice, f"{env.slot}: {len(twice)} changes recorded more than once, e.g. {sorted(twice)[:5]}"
        assert not missing, f"{env.slot}: {len(missing)} committed changes missing, e.g. {sorted(missing)[:5]}"
        assert set(found) == set(expected)
        assert env.events(event_prefix="auditlock.capture_gap") == [], f"{env.slot}: a gap recorded after a kill"

    def _one_run(self, env: CaptureEnv, rng: random.Random, load: WriteLoad) -> int:
        """Start capture, have it killed (at a failpoint, or from outside once it made progress); 1 if it died.

        While waiting, every poll lets the load commit one more transaction: a failpoint armed for its n-th pass
        is always reached (new transactions keep coming), and the wait is bounded.
        """
        external = rng.random() < 0.3
        failpoint = None if external else f"{rng.choice(FAILPOINTS)}:{rng.randint(1, 4)}"
        before = position_text(env)
        child = start_capture(env, failpoint)
        try:
            if external:
                wait_for(lambda: position_text(env) != before or child.poll() is not None or load.allow(1),
                         timeout=180, what="capture making progress")
                if child.poll() is None:
                    child.send_signal(signal.SIGKILL)
            else:
                wait_for(lambda: child.poll() is not None or load.allow(1), timeout=180,
                         what=f"capture killed at failpoint {failpoint}")
            returncode = child.wait(timeout=120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
            if child.stderr:
                child.stderr.close()
        assert returncode == -signal.SIGKILL, f"capture ended with {returncode} instead of a kill:\n{stderr[-2000:]}"
        return 1
