"""Throwaway S3 servers for tests: moto in a thread (fast) and Ceph RADOS Gateway as real daemons.

Both are needed because each differs from AWS in other ways (see REAL-S3.md, the notes on running
them): moto misses integrity and retention checks, RADOS Gateway ignores checksum headers and (in
versioned buckets) If-None-Match.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RGW_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph")
RGW_INSTALL_HINT = "apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw ceph-common"
POLL_INTERVAL = 0.05  # between polls of a readiness condition; never used on its own to synchronise


@dataclass(frozen=True)
class S3Endpoint:
    """Where a test S3 server listens and how to sign requests for it."""

    url: str
    access_key: str
    secret_key: str
    region: str
    kind: str  # "moto" | "rgw"

    def credentials_env(self) -> dict[str, str]:
        """The environment variables boto3 (and every agent or CLI child) reads this endpoint's credentials from."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    def client(self, **kw: Any) -> S3Client:
        """Return a boto3 S3 client for this endpoint; keyword arguments override the defaults."""
        # Checksums only when the operation requires them: older servers reject the CRC32 headers
        # boto3 >= 1.36 adds by default. Path style because neither server has wildcard DNS.
        config = Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            retries={"mode": "standard"},
        )
        if "config" in kw:
            config = config.merge(kw.pop("config"))
        params: dict[str, Any] = {
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": config,
            **kw,
        }
        # A fresh session per client: the default boto3 session is not thread-safe.
        client: S3Client = boto3.session.Session().client("s3", **params)
        return client


def content_md5(body: bytes) -> str:
    """Return the base64 Content-MD5 header value for body (FIPS-safe: not used for security)."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ---------------------------------------------------------------------------------------------- moto


def start_moto() -> tuple[S3Endpoint, Callable[[], None]]:
    """Start moto's S3 server on a free loopback port; return its endpoint and a stop function."""
    # werkzeug logs every request at INFO, which drowns test output.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer

    # Port 0 lets the kernel pick the port at bind time, so no other process can take it in between.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is bound and listening
    host, port = server.get_host_and_port()
    endpoint = S3Endpoint(
        url=f"http://{host}:{port}", access_key="testing", secret_key="testing", region="us-east-1", kind="moto"
    )
    return endpoint, server.stop


# ------------------------------------------------------------------------------------- RADOS Gateway


def rgw_available() -> str | None:
    """Return None when the Ceph binaries are on PATH, else a reason naming the missing ones."""
    missing = [name for name in RGW_BINARIES if shutil.which(name) is None]
    if not missing:
        return None
    return f"RADOS Gateway not installed: missing {', '.join(missing)} ({RGW_INSTALL_HINT})"


class RgwError(RuntimeError):
    """The throwaway Ceph cluster did not come up (the message carries the daemon's last log lines)."""


def _tail(path: Path, lines: int = 25) -> str:
    """Return the last lines of a log file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<no log at {path}: {exc.strerror}>"
    return "\n".join(text.splitlines()[-lines:])


def _proc_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (our daemons are reparented, and init may not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    """Return the argv of pid, or [] when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _wait_until(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    """Poll check until it is true; raise RgwError with the tail of log after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise RgwError(f"{what}: not ready after {timeout:.0f}s; last lines of {log}:\n{_tail(log)}")
        time.sleep(POLL_INTERVAL)


class RadosGateway:
    """A throwaway single-node Ceph cluster (mon + in-memory OSD + radosgw) under one state directory.

    Usage: ``rgw = RadosGateway(tmpdir).start(); rgw.endpoint.client(); rgw.stop()`` (or a ``with`` block).
    """

    MON_ID = "a"
    RGW_NAME = "client.rgw.a"

    def __init__(self, state_dir: Path | str, *, timeout: float = 60.0, uid: str = "audit") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.timeout = timeout
        self.uid = uid
        self.access_key = "AUDIT" + uuid.uuid4().hex[:15].upper()
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.fsid = str(uuid.uuid4())
        self.mon_port = free_port()
        self.rgw_port = free_port()
        self.startup_seconds: float | None = None
        self._endpoint: S3Endpoint | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- paths and environment --------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        """The ceph.conf every daemon and tool of this cluster reads."""
        return self.state_dir / "ceph.conf"

    def _log(self, name: str) -> Path:
        """Log file of daemon name (ceph expands $name in log_file to e.g. mon.a)."""
        return self.state_dir / "log" / f"{name}.log"

    def _env(self) -> dict[str, str]:
        """Environment for ceph tools: our conf, and no CEPH_ARGS that could point at a real cluster."""
        env = {k: v for k, v in os.environ.items() if k != "CEPH_ARGS"}
        env["CEPH_CONF"] = str(self.conf_path)
        return env

    @property
    def endpoint(self) -> S3Endpoint:
        """The S3 endpoint of the running gateway."""
        if self._endpoint is None:
            raise RgwError("RadosGateway.start() has not completed")
        return self._endpoint

    # -- start --------------------------------------------------------------------------------------

    def start(self) -> RadosGateway:
        """Create and start the cluster and an S3 user; on any failure stop what was started."""
        began = time.monotonic()
        # Safety nets for a session that ends without running fixture finalizers: atexit covers a
        # normal interpreter exit, the watchdog a kill (SIGTERM/SIGKILL by a CI timeout).
        atexit.register(self.stop)
        self._spawn_watchdog()
        try:
            self._write_conf()
            self._start_mon()
            self._start_osd()
            self._start_rgw()
            self._create_user()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def __enter__(self) -> RadosGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_conf(self) -> None:
        """Create the state directory layout and write ceph.conf into it."""
        for sub in ("run", "log", "crash", "mon", "osd", "rgw"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        lines = []
        for section, options in self._conf_sections().items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {value}" for key, value in options.items())
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _conf_sections(self) -> dict[str, dict[str, object]]:
        """ceph.conf as in REAL-S3.md: loopback only, no auth, memstore, fast paxos, every file in here."""
        s = self.state_dir
        crc = {
            f"ms_{kind}_mode": "crc"
            for kind in ("mon_client", "client", "service", "cluster", "mon_service", "mon_cluster")
        }
        return {
            "global": {
                "fsid": self.fsid,
                "mon_host": f"v2:127.0.0.1:{self.mon_port}",
                "public_addr": "127.0.0.1",
                "cluster_addr": "127.0.0.1",
                "ms_bind_ipv6": "false",
                "auth_cluster_required": "none",
                "auth_service_required": "none",
                "auth_client_required": "none",
                # Without crc everywhere radosgw retries auth with -13 forever and never starts.
                **crc,
                "run_dir": s / "run",
                "admin_socket": s / "run" / "$name.asok",
                "pid_file": s / "run" / "$name.pid",
                "log_file": s / "log" / "$name.log",
                "crash_dir": s / "crash",
                "osd_pool_default_size": 1,
                "osd_pool_default_min_size": 1,
                "osd_pool_default_pg_num": 1,
                "osd_pool_default_pgp_num": 1,
                "osd_pool_default_pg_autoscale_mode": "off",
                "mon_allow_pool_size_one": "true",
                "mon_warn_on_pool_no_redundancy": "false",
                "mon_max_pg_per_osd": 1000,
                "osd_crush_chooseleaf_type": 0,
                # These two and the pg settings take start-up from ~12.6 s to ~1.5 s.
                "paxos_propose_interval": 0.05,
                "paxos_min_wait": 0.01,
            },
            "mon": {
                "mon_data": s / "mon" / "$id",
                # Default is /var/log/ceph/ceph.log; keep every file under the state dir.
                "mon_cluster_log_file": s / "log" / "cluster.log",
                "mon_data_avail_crit": 0,
                "mon_data_avail_warn": 0,
            },
            "osd": {
                "osd_data": s / "osd" / "$id",
                "osd_objectstore": "memstore",
                "memstore_device_bytes": 4294967296,
            },
            "client": {
                "rgw_data": s / "rgw" / "$id",
                "rgw_frontends": f"beast endpoint=127.0.0.1:{self.rgw_port}",
                "rgw_dns_name": "127.0.0.1",
                "rgw_enable_usage_log": "false",
                "rgw_rados_pool_pg_num_min": 1,
            },
        }

    def _run(self, *argv: str, log: Path | None = None) -> str:
        """Run a ceph tool to completion (bounded by the timeout); return stdout or raise RgwError."""
        try:
            done = subprocess.run(
                argv, env=self._env(), capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RgwError(f"{' '.join(argv)}: timed out after {self.timeout:.0f}s{self._log_note(log)}") from exc
        if done.returncode != 0:
            raise RgwError(f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr.strip()}{self._log_note(log)}")
        return done.stdout

    def _log_note(self, log: Path | None) -> str:
        """The tail of log, formatted to append to an error message."""
        return "" if log is None else f"\nlast lines of {log}:\n{_tail(log)}"

    def _probe(self, *argv: str) -> subprocess.CompletedProcess[str] | None:
        """Run a quick status command for a readiness poll; None when it hangs past a few seconds."""
        try:
            return subprocess.run(argv, env=self._env(), capture_output=True, text=True, timeout=10, check=False)
        except subprocess.TimeoutExpired:
            return None

    def _start_mon(self) -> None:
        """Create the monmap, mkfs the monitor, start it and wait until it answers."""
        monmap = self.state_dir / "monmap"
        addr = f"[v2:127.0.0.1:{self.mon_port}]"
        self._run("monmaptool", "--create", "--fsid", self.fsid, "--addv", self.MON_ID, addr, str(monmap))
        log = self._log(f"mon.{self.MON_ID}")
        conf = str(self.conf_path)
        self._run("ceph-mon", "--conf", conf, "--mkfs", "-i", self.MON_ID, "--monmap", str(monmap), log=log)
        # --conf on the daemon's argv (not only CEPH_CONF) lets stop_cluster() find our processes in /proc.
        self._run("ceph-mon", "--conf", conf, "-i", self.MON_ID, log=log)

        def answers() -> bool:
            done = self._probe("ceph", "--connect-timeout", "2", "-s")
            return done is not None and done.returncode == 0

        _wait_until("ceph-mon", answers, self.timeout, log)

    def _start_osd(self) -> None:
        """Register, mkfs and start one memstore OSD; wait until the osdmap shows it up."""
        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "osd", "new", osd_uuid).strip()
        log = self._log(f"osd.{osd_id}")
        conf = str(self.conf_path)
        (self.state_dir / "osd" / osd_id).mkdir(exist_ok=True)
        self._run("ceph-osd", "--conf", conf, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid, log=log)
        self._run("ceph-osd", "--conf", conf, "-i", osd_id, log=log)

        def is_up() -> bool:
            done = self._probe("ceph", "--connect-timeout", "2", "osd", "dump", "--format", "json")
            if done is None or done.returncode != 0:
                return False
            osds = json.loads(done.stdout).get("osds", [])
            return any(str(o.get("osd")) == osd_id and o.get("up") == 1 for o in osds)

        _wait_until(f"osd.{osd_id}", is_up, self.timeout, log)

    def _start_rgw(self) -> None:
        """Start radosgw (it daemonizes once it reached RADOS) and wait until its port answers HTTP."""
        log = self._log(self.RGW_NAME)
        # The foreground phase retries RADOS forever when misconfigured, so it is bounded by _run's timeout.
        self._run("radosgw", "--conf", str(self.conf_path), "-n", self.RGW_NAME, log=log)
        url = f"http://127.0.0.1:{self.rgw_port}/"

        def answers_http() -> bool:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # any HTTP status (403 for an anonymous request) means beast is serving
            except OSError:
                return False

        _wait_until("radosgw", answers_http, self.timeout, log)

    def _create_user(self) -> None:
        """Create the S3 user and wait until the gateway accepts its signed requests."""
        self._run(
            "radosgw-admin",
            "user",
            "create",
            f"--uid={self.uid}",
            f"--display-name={self.uid}",
            f"--access-key={self.access_key}",
            f"--secret-key={self.secret_key}",
            log=self._log("client.admin"),
        )
        endpoint = S3Endpoint(
            url=f"http://127.0.0.1:{self.rgw_port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region="us-east-1",
            kind="rgw",
        )
        client = endpoint.client(config=Config(retries={"max_attempts": 1}))

        def accepts_user() -> bool:
            try:
                client.list_buckets()
            except (ClientError, BotoCoreError):
                return False
            return True

        _wait_until("radosgw user", accepts_user, self.timeout, self._log(self.RGW_NAME))
        self._endpoint = endpoint

    # -- stop ---------------------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """Stop the daemons (SIGTERM, SIGKILL after grace seconds) and remove the state directory."""
        atexit.unregister(self.stop)
        self._endpoint = None
        stop_cluster(self.state_dir, grace)
        self._dismiss_watchdog()

    # -- watchdog -----------------------------------------------------------------------------------

    def _spawn_watchdog(self) -> None:
        """Start a process that stops the cluster when this one exits by any means (even SIGKILL)."""
        # It blocks reading a pipe only we hold the write end of (close_fds keeps it out of the
        # daemons), so EOF arrives when we close it or die. Its own session keeps a terminal's
        # Ctrl-C from killing it before it has cleaned up.
        self._watchdog = subprocess.Popen(
            [sys.executable, __file__, "--watch", str(self.state_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _dismiss_watchdog(self) -> None:
        """Close the watchdog's pipe (the cluster is already gone, so it just exits) and reap it."""
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        assert watchdog.stdin is not None
        watchdog.stdin.close()
        try:
            watchdog.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


STOP_ORDER = ("radosgw", "ceph-osd", "ceph-mon")


def stop_cluster(state_dir: Path, grace: float = 5.0) -> None:
    """Stop the daemons of the cluster under state_dir, gateway first, then remove the directory."""
    if state_dir.exists():
        daemons = _cluster_daemons(state_dir)
        # Clients before servers: an OSD whose monitor is already gone waits osd_mon_shutdown_timeout
        # (5 s) for the mon to acknowledge its shutdown; in this order everything exits in ~0.3 s.
        for program in STOP_ORDER:
            _terminate({pid for pid, name in daemons.items() if name == program}, grace)
        _terminate({pid for pid, name in daemons.items() if name not in STOP_ORDER}, grace)
    shutil.rmtree(state_dir, ignore_errors=True)


def _cluster_daemons(state_dir: Path) -> dict[int, str]:
    """Daemons of the cluster (pid -> program): from pid files, plus processes naming its ceph.conf."""
    conf = str(state_dir / "ceph.conf")
    pids: set[int] = set()
    for pidfile in (state_dir / "run").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(pidfile.read_text().strip()))
    # The scan catches a daemon that died before writing its pid file, or a radosgw child left
    # behind when the foreground phase timed out. Matching the unique conf path means we never
    # signal anything we did not start (and a recycled pid from a stale pid file is ignored).
    pids.update(int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    argvs = {pid: _cmdline(pid) for pid in pids}
    return {pid: Path(argv[0]).name for pid, argv in argvs.items() if conf in argv}


def _terminate(pids: set[int], grace: float) -> None:
    """SIGTERM pids, wait up to grace seconds for them to exit, then SIGKILL the survivors."""
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_proc_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    _signal({p for p in pids if _proc_alive(p)}, signal.SIGKILL)
    # Daemons are normally reparented to init, which reaps them. When this process is init itself
    # (pytest as PID 1 in a container) or a subreaper, they are our children: reap them here.
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _signal(pids: set[int], sig: signal.Signals) -> None:
    """Send sig to each pid, ignoring those that already exited."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# ------------------------------------------------------------------------------------------ buckets


def make_lock_bucket(
    client: S3Client,
    name: str,
    *,
    default_days: int | None = None,
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE",
) -> str:
    """Create an Object Lock bucket (versioning is implied), optionally with a default retention."""
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    if default_days is not None:
        client.put_object_lock_configuration(
            Bucket=name,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": mode, "Days": default_days}},
            },
        )
    return name


def make_plain_bucket(client: S3Client, name: str) -> str:
    """Create a bucket without Object Lock or versioning: objects in it can be overwritten and deleted."""
    client.create_bucket(Bucket=name)
    return name


def _watch(state_dir: str) -> None:
    """Watchdog body: wait for EOF on stdin (the owner closed the pipe or died), then stop the cluster."""
    sys.stdin.buffer.read()
    stop_cluster(Path(state_dir))


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(sys.argv[2])
