"""The agent image (deploy/Dockerfile, built by deploy/build-image) ships a spool to a real S3 server.

Opt-in: set AUDITLOCK_BUILD_IMAGE=1. Building needs root, buildah and debootstrap, and the network to Debian's
mirror and PyPI (about 2 minutes cold; later builds reuse the rootfs and buildah's layer cache). The container
runs with chroot isolation on the host network, so it reaches the moto server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.archive_env import ArchiveEnv
from tests.support.capture_env import DSN_ENV, CaptureEnv
from tests.support.s3servers import S3Endpoint, free_port, make_lock_bucket
from tests.support.spool_files import segment_paths
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
BUILD_ENV = "AUDITLOCK_BUILD_IMAGE"
TAG = "localhost/auditlock-agent:test"
BUILDAH = ["buildah", "--storage-driver", "vfs"]  # the store deploy/build-image builds into
IMAGE_UID = 10002  # USER in deploy/Dockerfile: the agent's own user
SPOOL_GID = 10003  # the image's group: the spool's group, shared with the application
APP_UID = 10001  # the application's user in deploy/k8s: it owns the segments
SPOOL = "/var/spool/auditlock"
CONFIG = "/etc/auditlock/auditlock.toml"
BUILD_TIMEOUT_S = 1100  # ~2 min on an idle machine, several times that on a loaded one

# The first test's setup includes the image build: its bound is the build's own, not pytest's default 300 s.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 300)
_failed_build: list[str] = []  # a failed build fails the module's other tests at once instead of building again


@pytest.fixture(scope="session")
def agent_image() -> Iterator[str]:
    """Build the image once per session with deploy/build-image; its tag."""
    if os.environ.get(BUILD_ENV) != "1":
        pytest.skip(f"image build is opt-in: set {BUILD_ENV}=1 (needs root, buildah, debootstrap; ~2 min cold)")
    missing = [tool for tool in ("buildah", "debootstrap") if shutil.which(tool) is None]
    if missing or os.geteuid() != 0:
        pytest.fail(f"{BUILD_ENV}=1 but {'missing ' + ', '.join(missing) if missing else 'not root'} "
                    "(apt-get install -y buildah debootstrap; run as root)", pytrace=False)
    if _failed_build:
        pytest.fail(f"the image build failed earlier in this session: {_failed_build[0]}", pytrace=False)
    _failed_build.append(f"deploy/build-image did not finish within {BUILD_TIMEOUT_S} s")
    result = subprocess.run([str(REPO / "deploy" / "build-image")], capture_output=True, text=True,
                            timeout=BUILD_TIMEOUT_S, check=False, env={**os.environ, "AUDITLOCK_IMAGE_TAG": TAG})
    _failed_build[0] = f"exit {result.returncode}"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _failed_build.clear()
    yield TAG
    # vfs keeps full copies of every layer: drop the previous builds' untagged images so repeated runs on one
    # machine do not fill its disk (the tagged base and this image stay for the next build's cache).
    subprocess.run([*BUILDAH, "rmi", "--prune"], capture_output=True, check=False)


@pytest.fixture
def container(agent_image: str) -> Iterator[str]:
    """A working container of the image; removed afterwards."""
    done = subprocess.run([*BUILDAH, "from", "--pull=never", agent_image], capture_output=True, text=True,
                          check=True)
    name = done.stdout.strip()
    yield name
    subprocess.run([*BUILDAH, "rm", name], capture_output=True, check=False)


@pytest.fixture
def archive(tmp_path: Path, moto_s3: S3Endpoint) -> ArchiveEnv:
    """A spool and config under tmp_path shipping to a fresh Object Lock bucket on moto."""
    bucket = make_lock_bucket(moto_s3.client(), f"auditlock-image-{uuid.uuid4().hex[:12]}")
    return ArchiveEnv.create(tmp_path, moto_s3, bucket)


def container_config(env: ArchiveEnv, **agent: str) -> Path:
    """The env's config as the container sees it (spool at SPOOL), with [agent] keys replaced; its directory."""
    text = env.config_path.read_text().replace(str(env.spool), SPOOL)
    for key, value in agent.items():
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    etc = env.root / "etc"
    etc.mkdir()
    (etc / "auditlock.toml").write_text(text + "\n")
    return etc


def hand_spool_to_image_user(env: ArchiveEnv) -> None:
    """Lay the spool out as in deploy/k8s: the agent's (the image's user), group the spool's, 3770, and segments
    owned by the application's user, as if the app container had written them."""
    os.chown(env.spool, IMAGE_UID, SPOOL_GID)
    os.chmod(env.spool, 0o3770)  # docs/operations.md, "Two identities"
    for path in env.spool.rglob("*"):
        os.chown(path, APP_UID, SPOOL_GID)


def run_argv(container: str, env: ArchiveEnv, etc: Path, *command: str, **environ: str) -> list[str]:
    """`buildah run` of command in container: host network, spool and config bind-mounted, S3 credentials."""
    settings = {**env.endpoint.credentials_env(), **environ}
    return [*BUILDAH, "run", "--isolation", "chroot", "--network", "host",
            "--volume", f"{env.spool}:{SPOOL}", "--volume", f"{etc}:/etc/auditlock:ro",
            *(arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")),
            container, "--", *command]


def image_config(image: str) -> dict[str, object]:
    """The image's Docker config (Entrypoint, User, Healthcheck, ...)."""
    done = subprocess.run([*BUILDAH, "inspect", "--type", "image", image], capture_output=True, text=True,
                          check=True)
    config: dict[str, object] = json.loads(done.stdout)["Docker"]["config"]
    return config


def agent_pid(parent: int) -> int | None:
    """The agent's Python process under a `buildah run` process (which does not forward SIGTERM itself)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(proc.name))
    todo = [parent]
    while todo:
        for pid in children.get(todo.pop(), []):
            try:
                argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"/python3") and argv[1:3] == [b"/opt/auditlock/bin/auditlock", b"agent"]:
                return pid
            todo.append(pid)
    return None


class TestAgentImage:
    def test_image_runs_the_agent_as_non_root(self, agent_image: str) -> None:
        """The image's entrypoint is `auditlock agent`, as UID 10002 (not the app's), with a HEALTHCHECK on /healthz."""
        config = image_config(agent_image)
        assert config["Entrypoint"] == ["auditlock", "agent"]
        assert config["User"] == f"{IMAGE_UID}:{SPOOL_GID}"
        assert "/healthz" in " ".join(config["Healthcheck"]["Test"])  # type: ignore[index]

    def test_once_ships_the_spool(self, container: str, archive: ArchiveEnv) -> None:
        """`auditlock agent --once` in the container ships every event and empties the spool."""
        written = archive.write_events(5, actor="user#82")
        hand_spool_to_image_user(archive)
        etc = container_config(archive)
        result = subprocess.run(run_argv(container, archive, etc, "auditlock", "agent", "--once", "--config", CONFIG),
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        shipped = archive.archive_events()
        assert [e["event_id"] for e in shipped] == [e["event_id"] for e in written]
        assert {(e["event_type"], e["actor_id"], e["target_type"]) for e in shipped} == {
            ("order.updated", "user#82", "Order")}
        assert segment_paths(archive.spool) == []

    def test_serves_health_and_drains_on_sigterm(self, container: str, archive: ArchiveEnv, agent_image: str) -> None:
        """The running agent passes the image's HEALTHCHECK and ships what is waiting when it gets SIGTERM."""
        written = archive.write_events(3)
        hand_spool_to_image_user(archive)
        port = free_port()
        # A batch that never comes due on its own: only the drain on SIGTERM ships these events.
        etc = container_config(archive, http_port=str(port), batch_max_age_s="3600")
        port_env = {"AUDITLOCK_AGENT_HTTP_PORT": str(port)}
        agent = subprocess.Popen(run_argv(container, archive, etc, "auditlock", "agent", "--config", CONFIG),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: _answers(f"http://127.0.0.1:{port}/readyz", agent), timeout=120, what="agent /readyz")
            healthcheck = image_config(agent_image)["Healthcheck"]["Test"][1:]  # type: ignore[index]
            probe = subprocess.run(run_argv(container, archive, etc, *healthcheck, **port_env),
                                   capture_output=True, text=True, timeout=60, check=False)
            assert probe.returncode == 0, probe.stderr
            assert archive.archive_events() == []
            pid = agent_pid(agent.pid)
            assert pid is not None
            os.kill(pid, signal.SIGTERM)
            _, stderr = agent.communicate(timeout=120)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        assert agent.returncode == 0, stderr
        assert "SIGTERM received, draining" in stderr
        assert [e["event_id"] for e in archive.archive_events()] == [e["event_id"] for e in written]


def _answers(url: str, process: subprocess.Popen[str]) -> bool:
    """True once url answers 200; fail at once if process exited."""
    if process.poll() is not None:
        raise AssertionError(f"agent container exited with {process.returncode}: {process.stderr.read()}")  # type: ignore[union-attr]
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class TestCaptureInTheImage:
    """The same image runs `auditlock capture` (deploy/k8s/capture): the extra `capture` is installed in it."""

    def test_capture_once_writes_committed_changes_to_the_spool(self, container: str,
                                                                 capture_env: CaptureEnv) -> None:
        """`auditlock capture --once` in the container, against a real PostgreSQL, writes a committed INSERT and
        UPDATE into the spool as order.created / order.updated."""
        capture_env.setup()
        capture_env.sql("INSERT INTO orders VALUES (1, 'new', 1, NULL, NULL)", "UPDATE orders SET status = 'paid'")
        capture_env.spool.mkdir(exist_ok=True)
        os.chown(capture_env.spool, IMAGE_UID, SPOOL_GID)
        os.chmod(capture_env.spool, 0o3770)
        etc = capture_env.root / "etc"
        etc.mkdir()
        (etc / "auditlock.toml").write_text(capture_env.config_path.read_text().replace(str(capture_env.spool), SPOOL))
        argv = [*BUILDAH, "run", "--isolation", "chroot", "--network", "host",
                "--volume", f"{capture_env.spool}:{SPOOL}", "--volume", f"{etc}:/etc/auditlock:ro",
                "--env", f"{DSN_ENV}={capture_env.dsn_for_capture}", container, "--",
                "auditlock", "capture", "--once", "--config", CONFIG]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert [e["event_type"] for e in capture_env.events()] == ["order.created", "order.updated"]

