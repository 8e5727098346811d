"""Content-MD5 on the wire (issue #14 item 12): every PUT the agent sends, events objects and digests, carries
`Content-MD5: base64(md5(body))` of exactly the bytes it sends.

An in-process `Agent` with its real `Uploader` and boto3 client ships to the session's moto server; a botocore
`before-send` hook records each PutObject request as it leaves (headers and body after signing). The shipper's
abort event is set beforehand, so a PUT the server refuses (a wrong or missing digest) ends the drain at once
with `DeadlineExceededError` instead of being retried: the test then reports the header, never a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from auditlock.agent.service import Agent
from auditlock.agent.shipper import DeadlineExceededError
from tests.support.archive_env import ArchiveEnv, two_class_archive
from tests.support.s3servers import S3Endpoint

DRAIN_DEADLINE_S = 120.0


@pytest.fixture
def s3(moto_s3: S3Endpoint) -> S3Endpoint:
    """These tests run against the session's moto server."""
    return moto_s3


@pytest.fixture
def env(tmp_path: Path, bucket: tuple[S3Endpoint, str], monkeypatch: pytest.MonkeyPatch) -> ArchiveEnv:
    """Events of two retention classes (one batch = two objects and a digest); credentials in the environment."""
    return two_class_archive(tmp_path, bucket, monkeypatch, events_per_class=20)


def md5_b64(body: bytes) -> str:
    """base64 of the MD5 of `body`, as Content-MD5 wants it."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


class SentPuts:
    """Records each PutObject request as botocore sends it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # (url, headers, body)

    def __call__(self, request: Any, **_: Any) -> None:
        body = request.body
        if not isinstance(body, bytes):  # a file-like body: read it, then rewind it for the real send
            start = body.tell()
            body, _ = body.read(), body.seek(start)
        self.requests.append((request.url, {k.lower(): _text(v) for k, v in request.headers.items()}, body))


def drain_recording_puts(env: ArchiveEnv) -> tuple[Agent, SentPuts, BaseException | None]:
    """Drain the spool with an in-process agent; returns it, the PUTs sent and the failure that ended it, if any."""
    agent = Agent(env.config, serve_http=False)
    sent = SentPuts()
    agent.shipper.uploader.client.meta.events.register("before-send.s3.PutObject", sent)
    agent.abort.set()  # a refused PUT raises at once instead of being retried
    try:
        agent.shipper.resume()
        agent.shipper.recover()
        agent.shipper.ship_due(force=True, deadline=time.monotonic() + DRAIN_DEADLINE_S)
    except DeadlineExceededError as exc:
        return agent, sent, exc
    return agent, sent, None


def _text(value: str | bytes) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class TestContentMD5Header:
    """Invariant: every PUT carries Content-MD5 = base64(md5(body)), so S3 rejects a body damaged in transit."""

    def test_every_put_carries_the_md5_of_its_body(self, env: ArchiveEnv) -> None:
        """Invariant (Content-MD5): events objects and the digest each carry the MD5 of the bytes sent."""
        _, sent, failure = drain_recording_puts(env)

        assert sent.requests, "the drain sent no PUT"
        for url, headers, body in sent.requests:
            assert headers.get("content-md5") == md5_b64(body), f"Content-MD5 of the PUT of {url}"
        urls = [url for url, _, _ in sent.requests]
        assert sum("/audit/events/" in url for url in urls) == 2, urls
        assert sum("/audit/digests/" in url for url in urls) == 1, urls
        assert failure is None, f"the drain failed: {failure!r}"
        assert len(env.archive_keys()) == 2

    def test_objects_and_digests_are_counted_apart(self, env: ArchiveEnv) -> None:
        """The drain's counters: events objects and their events and bytes, digests on their own counter."""
        agent, sent, failure = drain_recording_puts(env)

        assert failure is None, f"the drain failed: {failure!r}"
        sample = agent.metrics.registry.get_sample_value
        events = [body for url, _, body in sent.requests if "/audit/events/" in url]
        assert sample("auditlock_objects_shipped_total") == len(events) == 2
        assert sample("auditlock_digests_shipped_total") == 1
        assert sample("auditlock_bytes_shipped_total") == sum(len(body) for body in events)
        assert sample("auditlock_events_shipped_total") == len(env.archive_events(closings=True))
