"""FaultProxy against a real moto S3 server: each fault looks to boto3 like the real thing."""

from __future__ import annotations

import io
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from moto.server import ThreadedMotoServer

from tests.support.faultproxy import Action, FaultProxy, LogEntry

BUCKET = "faultproxy-test"
# "No retries" spelled precisely: botocore's retries={"max_attempts": 1} means one *retry*.
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})
STANDARD_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 3})
BASE_CONFIG = Config(
    s3={"addressing_style": "path"},
    request_checksum_calculation="when_required",
    read_timeout=10,
    connect_timeout=5,
).merge(NO_RETRIES)

ClientFactory = Callable[..., Any]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A real S3 API (moto) on a free port, holding an empty BUCKET."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    direct = _client(url)
    direct.create_bucket(Bucket=BUCKET)
    direct.close()
    yield url
    server.stop()
    # ThreadedMotoServer.stop() shuts the serve loop down but leaves the listening socket open.
    server._server.server_close()  # type: ignore[union-attr]


@pytest.fixture
def proxy(moto_url: str) -> Iterator[FaultProxy]:
    """A fresh proxy per test, so request numbers and the log start at zero."""
    with FaultProxy(moto_url, max_stall=10) as fp:
        yield fp
    assert fp.errors == []


@pytest.fixture
def make_client(proxy: FaultProxy, moto_url: str) -> Iterator[ClientFactory]:
    """Build boto3 S3 clients (through the proxy unless told otherwise), closed at teardown."""
    made: list[Any] = []

    def make(config: Config | None = None, direct: bool = False) -> Any:
        client = _client(moto_url if direct else proxy.url, config)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _client(url: str, config: Config | None = None) -> Any:
    """An S3 client for ``url``: dummy credentials, path addressing, no retries unless ``config`` says so."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=BASE_CONFIG.merge(config) if config else BASE_CONFIG,
    )


def _key() -> str:
    return f"obj-{uuid.uuid4().hex}"


def _exists(client: Any, key: str) -> bool:
    try:
        client.head_object(Bucket=BUCKET, Key=key)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("404", "NoSuchKey"):
            return False
        raise
    return True


def _summary(log: list[LogEntry]) -> list[tuple[str, Action, int | None]]:
    return [(e.method, e.action, e.upstream_status) for e in log]


class TestPassThrough:
    def test_put_then_get_round_trips(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """A PUT and a GET through the proxy behave exactly as against moto directly."""
        s3, key = make_client(), _key()
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"hello")
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello"
        assert _summary(proxy.log) == [("PUT", "pass", 200), ("GET", "pass", 200)]

    def test_expect_continue_body_is_forwarded(self, make_client: ClientFactory) -> None:
        """A file-like body (sent with Expect: 100-continue) arrives intact."""
        s3, key, data = make_client(), _key(), bytes(range(256)) * 8192
        s3.put_object(Bucket=BUCKET, Key=key, Body=io.BytesIO(data))
        assert make_client(direct=True).get_object(Bucket=BUCKET, Key=key)["Body"].read() == data

    def test_upstream_errors_and_head_are_relayed(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """Upstream 404s and bodiless HEAD answers reach the client unchanged."""
        s3, key = make_client(), _key()
        with pytest.raises(ClientError) as exc:
            s3.get_object(Bucket=BUCKET, Key=key)
        assert exc.value.response["Error"]["Code"] == "NoSuchKey"
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"12345")
        assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 5

    def test_keep_alive_serves_many_requests_per_connection(
        self, proxy: FaultProxy, make_client: ClientFactory
    ) -> None:
        """Sequential requests from one client reuse a single proxied connection."""
        s3 = make_client()
        for i in range(5):
            s3.put_object(Bucket=BUCKET, Key=f"{_key()}-{i}", Body=b"x")
        assert len(proxy.log) == 5
        assert proxy.connections_accepted == 1


class TestStatusFaults:
    @pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
    def test_error_is_a_client_error_without_retries(
        self, proxy: FaultProxy, make_client: ClientFactory, status: int, code: str
    ) -> None:
        """An injected S3 error surfaces as ClientError with its code, and is never forwarded."""
        s3, key = make_client(), _key()
        proxy.fail_next(1, ("status", status, code))
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert exc.value.response["Error"]["Code"] == code
        assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
        assert not _exists(make_client(direct=True), key)

    def test_slowdown_is_retried_until_success(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """Standard retries back off through two 503 SlowDown answers and then succeed."""
        s3, key = make_client(STANDARD_RETRIES), _key()
        slowdown: Action = ("status", 503, "SlowDown")
        proxy.fail_next(2, slowdown)
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert _summary(proxy.log) == [("PUT", slowdown, None), ("PUT", slowdown, None), ("PUT", "pass", 200)]

    def test_methods_filter_and_clear(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """fail_next only hits the listed methods, and clear() lifts a plan."""
        s3, key = make_client(), _key()
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        proxy.fail_next(1, ("status", 503, "SlowDown"), methods={"GET"})
        s3.head_object(Bucket=BUCKET, Key=key)
        proxy.plan(lambda method, path, n: ("status", 500, "InternalError"))
        proxy.clear()
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"x"
        assert [e.action for e in proxy.log] == ["pass", "pass", "pass"]


class TestResets:
    def test_reset_before_loses_the_request(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """A reset before forwarding: the client sees a dropped connection and nothing lands."""
        s3, key = make_client(), _key()
        proxy.fail_next(1, "reset_before")
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert not _exists(make_client(direct=True), key)
        assert _summary(proxy.log) == [("PUT", "reset_before", None)]

    def test_reset_after_lands_the_write_but_loses_the_answer(
        self, proxy: FaultProxy, make_client: ClientFactory
    ) -> None:
        """A reset after forwarding: the client sees a dropped connection, yet the object exists."""
        s3, key = make_client(), _key()
        proxy.fail_next(1, "reset_after")
        with pytest.raises(ConnectionClosedError):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"landed")
        assert make_client(direct=True).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"landed"
        assert _summary(proxy.log) == [("PUT", "reset_after", 200)]

    def test_retry_after_reset_after_writes_twice(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """boto3's retry of a lost answer re-sends a write that had already landed."""
        s3, key = make_client(STANDARD_RETRIES), _key()
        proxy.fail_next(1, "reset_after")
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        assert _summary(proxy.log) == [("PUT", "reset_after", 200), ("PUT", "pass", 200)]


class TestStall:
    def test_stall_fires_read_timeout_then_lands(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """A stalled PUT times the client out, then still reaches the upstream."""
        s3, key = make_client(Config(read_timeout=1)), _key()
        proxy.fail_next(1, ("stall", 3))
        with pytest.raises(ReadTimeoutError):
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"late")
        assert proxy.wait_for(lambda log: log[0].upstream_status == 200, timeout=10)
        assert make_client(direct=True).get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"late"

    def test_stall_is_bounded_by_max_stall(self, moto_url: str) -> None:
        """Stalls are capped at max_stall, so a typo cannot hang the suite."""
        with FaultProxy(moto_url, max_stall=0) as fp:
            fp.fail_next(1, ("stall", 3600), methods=None)
            s3 = _client(fp.url)
            assert not _exists(s3, _key())
            s3.close()
        assert _summary(fp.log) == [("HEAD", ("stall", 3600), 404)]


class TestPlanAndLifecycle:
    def test_plan_sees_method_path_and_index(self, proxy: FaultProxy, make_client: ClientFactory) -> None:
        """The plan gets each request's method, target and 0-based index."""
        seen: list[tuple[str, str, int]] = []

        def plan(method: str, path: str, n: int) -> Action:
            seen.append((method, path, n))
            return "pass"

        proxy.plan(plan)
        s3, key = make_client(), _key()
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
        s3.get_object(Bucket=BUCKET, Key=key)
        assert seen == [("PUT", f"/{BUCKET}/{key}", 0), ("GET", f"/{BUCKET}/{key}", 1)]

    def test_bad_actions_are_rejected(self, proxy: FaultProxy) -> None:
        """fail_next refuses actions it does not understand."""
        with pytest.raises(ValueError, match="unknown FaultProxy action"):
            proxy.fail_next(1, ("status", "503", "SlowDown"))  # type: ignore[arg-type]

    def test_stop_releases_port_and_threads(self, moto_url: str) -> None:
        """stop() closes the port and joins every proxy thread, even with idle keep-alive clients."""
        fp = FaultProxy(moto_url).start()
        s3 = _client(fp.url)
        assert not _exists(s3, _key())  # leaves a keep-alive connection open in boto3's pool
        port = int(fp.url.rsplit(":", 1)[1])
        fp.stop()
        s3.close()
        assert not [t for t in threading.enumerate() if t.name.startswith(f"faultproxy-{port}-")]
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
