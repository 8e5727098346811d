"""`auditlock capture` as a long-running service: readiness, lag metrics, SIGTERM, and capture + agent end to end
(the archive on a real S3 server verifies clean)."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import orjson
import psycopg

from auditlock.capture.service import Capture
from auditlock.config import load_config
from tests.support.capture_env import CaptureEnv
from tests.support.s3servers import S3Endpoint, make_lock_bucket
from tests.support.waiting import wait_for


class LogLines:
    """A subprocess's JSON log lines on stderr, collected by a thread."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        self.lines: list[dict[str, object]] = []
        self.raw: list[bytes] = []
        assert child.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(child.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.raw.append(line)
            try:
                self.lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue

    def port(self) -> int | None:
        """The HTTP port capture logged, once it did."""
        for line in self.lines:
            if line.get("event") == "auditlock capture: listening":
                return int(str(line["port"]))
        return None


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on capture's endpoint."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_capture(capture_env: CaptureEnv) -> subprocess.Popen[bytes]:
    """A long-running `auditlock capture` on the env's config (its log on a pipe, for `LogLines`)."""
    return subprocess.Popen([sys.executable, "-m", "auditlock", "capture", "--config", str(capture_env.config_path)],
                            env=capture_env.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class TestService:
    """Long-running capture: ready once started, metrics, and a clean stop on SIGTERM."""

    def test_ready_metrics_and_sigterm(self, capture_env: CaptureEnv) -> None:
        """/readyz turns 200, changes arrive while it runs, lag is exported, SIGTERM exits 0 with a clean end."""
        capture_env.setup()
        child = start_capture(capture_env)
        logs = LogLines(child)
        try:
            wait_for(lambda: logs.port() is not None or child.poll() is not None, what="capture listening")
            port = logs.port()
            assert port is not None, b"".join(logs.raw).decode()[-2000:]
            wait_for(lambda: get(port, "/readyz")[0] == 200, what="capture ready")
            assert get(port, "/healthz")[0] == 200
            capture_env.sql("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)")
            wait_for(lambda: b"order.created" in capture_env.spool_bytes() or any(
                b"order.created" in p.read_bytes() for p in (capture_env.spool / ".capture").glob("*.jsonl")),
                what="the change captured")
            metrics = get(port, "/metrics")[1]
            assert "auditlock_capture_lag_bytes" in metrics
            assert "auditlock_capture_lag_seconds" in metrics
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=120) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        (created,) = capture_env.events()
        assert created["target_id"] == "1"
        assert b"auditlock.writer_closed" in capture_env.spool_bytes()
        assert not list((capture_env.spool / ".capture").glob("*.jsonl")), "a segment left in staging"


def capture_backend_waits_on_a_lock(capture_env: CaptureEnv) -> bool:
    """Capture's database session is running a query that waits on a lock (its peek, held back)."""
    return bool(capture_env.sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'auditlock-capture' AND state = 'active' "
        "AND wait_event_type = 'Lock' AND query LIKE %s", params=("%auditlock_capture_peek%",))[0][0])


class TestStopDuringLongPeek:
    """SIGTERM while the server is still running capture's peek: the query is cancelled, nothing is lost."""

    def test_sigterm_cancels_the_peek_and_the_next_once_writes_the_rest(self, capture_env: CaptureEnv) -> None:
        """A peek held in flight is cancelled at half the grace period; exit 0; --once then writes the rest once."""
        capture_env.write_config(extra="grace_period_s = 2")
        capture_env.setup()
        child = start_capture(capture_env)
        logs = LogLines(child)
        # Decoding a committed transaction reads pg_publication (pgoutput loads the publication for it): while a
        # transaction of the test holds that catalog locked, the peek over the big transaction stays in flight
        # for as long as the test needs — a decode of any length, without racing one.
        with psycopg.connect(capture_env.dsn) as locker:
            try:
                wait_for(lambda: logs.port() is not None or child.poll() is not None, what="capture listening")
                capture_env.sql("SET synchronous_commit = on",
                                "INSERT INTO orders (id, status) SELECT g, 'new' FROM generate_series(1, 3) g")
                wait_for(lambda: b"order.created" in staged_and_spooled(capture_env), what="the first rows captured")
                locker.execute("LOCK TABLE pg_catalog.pg_publication IN ACCESS EXCLUSIVE MODE")
                capture_env.sql("SET synchronous_commit = on", "INSERT INTO orders (id, status) SELECT g, 'big' "
                                "FROM generate_series(4, 5003) g")
                wait_for(lambda: capture_backend_waits_on_a_lock(capture_env) or child.poll() is not None,
                         what="capture's peek in flight")
                assert child.poll() is None, b"".join(logs.raw).decode()[-3000:]
                child.send_signal(signal.SIGTERM)
                assert child.wait(timeout=120) == 0, b"".join(logs.raw).decode()[-3000:]
            finally:
                locker.rollback()
                if child.poll() is None:
                    child.kill()
                    child.wait()
        log_text = b"".join(logs.raw).decode()
        assert "cancelling the running query" in log_text
        assert "the running query was cancelled" in log_text
        assert "pass failed" not in log_text
        assert b"auditlock.writer_closed" in capture_env.spool_bytes()
        assert not list((capture_env.spool / ".capture").glob("*.jsonl")), "a segment left in staging"
        capture_env.capture("--once")
        assert [int(e["target_id"]) for e in capture_env.events()] == list(range(1, 5004))


def staged_and_spooled(capture_env: CaptureEnv) -> bytes:
    """Every byte capture wrote so far: the spool's segments and those still in its staging directory."""
    staged = b"".join(p.read_bytes() for p in sorted((capture_env.spool / ".capture").glob("*.jsonl")))
    return capture_env.spool_bytes() + staged


class TestEndToEnd:
    """Capture and the agent together: the captured changes reach S3 Object Lock and the archive verifies clean."""

    def test_capture_then_agent_then_verify(self, capture_env: CaptureEnv, moto_s3: S3Endpoint) -> None:
        """SQL changes → capture --once → agent --once → verify: clean, the captured events in the archive."""
        bucket = make_lock_bucket(moto_s3.client(), f"auditlock-capture-{uuid.uuid4().hex[:12]}")
        capture_env.write_config(extra=f"""
[sink]
bucket = "{bucket}"
endpoint_url = "{moto_s3.url}"
region = "us-east-1"
""")
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)", "UPDATE orders SET status = 'paid'")
        capture_env.capture("--once")
        env = {**capture_env.env(), **moto_s3.credentials_env()}
        for argv in (["agent", "--once"], ["verify"]):
            done = subprocess.run([sys.executable, "-m", "auditlock", *argv, "--config", str(capture_env.config_path)],
                                  capture_output=True, text=True, env=env, timeout=300, check=False)
            assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        assert "result: clean" in done.stdout
        assert not list(capture_env.spool.glob("*.jsonl"))



class TestRename:
    """A mapped table renamed while capture runs: the rename is recorded, then capture stops rather than lose rows."""

    def test_rename_is_recorded_and_stops_capture_until_the_config_follows(self, capture_env: CaptureEnv) -> None:
        """schema_changed is written; capture exits 1 naming the new table; with the new name, later rows arrive."""
        capture_env.setup()
        child = start_capture(capture_env)
        logs = LogLines(child)
        try:
            wait_for(lambda: logs.port() is not None or child.poll() is not None, what="capture listening")
            capture_env.sql("ALTER TABLE orders RENAME TO purchase_orders")
            capture_env.sql("INSERT INTO purchase_orders VALUES (1, 'new', 1, NULL, NULL)")
            assert child.wait(timeout=120) == 1
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert "was renamed to 'public.purchase_orders'" in b"".join(logs.raw).decode()
        (renamed,) = capture_env.events()
        assert renamed["event_type"] == "order.schema_changed"
        assert renamed["payload"]["object"] == "public.purchase_orders"
        text = capture_env.config_path.read_text().replace('"public.orders"', '"public.purchase_orders"')
        capture_env.config_path.write_text(text)
        capture_env.capture("--once")
        assert [e["event_type"] for e in capture_env.events()] == ["order.schema_changed", "order.created"]


class TestPacing:
    """A pass that caught up is followed by the rest of poll_interval_s, so changes gather into fewer passes."""

    @staticmethod
    def capture(capture_env: CaptureEnv) -> Capture:
        """A capture of the test config with batch_changes = 100 and poll_interval_s = 30 (nothing started)."""
        config = load_config(capture_env.config_path)
        settings = dataclasses.replace(config.capture, batch_changes=100, poll_interval_s=30.0)
        return Capture(dataclasses.replace(config, capture=settings), serve_http=False)

    def test_a_pass_that_found_changes_but_caught_up_waits(self, capture_env: CaptureEnv) -> None:
        """Fewer changes than batch_changes: the next pass waits what is left of the poll interval."""
        pause = self.capture(capture_env).pause_after(40, time.monotonic())
        assert 0 < pause <= 30

    def test_a_full_pass_goes_straight_on(self, capture_env: CaptureEnv) -> None:
        """A pass that took batch_changes messages has more waiting: no pause."""
        assert self.capture(capture_env).pause_after(100, time.monotonic()) == 0

    def test_a_pass_longer_than_the_interval_goes_straight_on(self, capture_env: CaptureEnv) -> None:
        """A pass that took longer than poll_interval_s is not followed by a pause of its own."""
        assert self.capture(capture_env).pause_after(0, time.monotonic() - 60) == 0
