"""Two real users for the two-identities tests: an application's and an agent's, sharing the spool's group.

The ``two_users`` fixture creates them with ``groupadd``/``useradd`` when the tests run as root (CI does), and
skips with the reason otherwise — or fails when ``AUDITLOCK_REQUIRE_USERS=1`` (CI), like ``rgw_s3``. They are
system users without a home or a shell, kept between sessions (creating them again would only fail).

The users must reach the interpreter and the checkout: a Python installed under /root (mode 0700) is out of their
reach. The fixture checks that the application's user can import auditlock and the tests' helpers, and otherwise
skips naming the fix: give the directories on both paths o+x (traverse, not list), which .ci/run does.

Run as ``python -m tests.support.users write CONFIG COUNT [--torn]`` it is the application's side: it writes
COUNT events through the real writer with that config and prints their event ids as one JSON list; with
``--torn`` it leaves its segment open and appends half a line, as a writer killed mid-write does. As
``... overflow CONFIG COUNT`` it emits COUNT events with a config that drops them when the spool is full
(``on_error = "drop"``) and prints how many it dropped. As
``... attempt OPERATIONS_JSON`` it tries file operations and prints what each gave (``attempt`` runs it as a user).
"""

from __future__ import annotations

import argparse
import errno
import grp
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRE_USERS_ENV = "AUDITLOCK_REQUIRE_USERS"
SPOOL_GROUP = "auditlock-t-spool"
APP_USER = "auditlock-t-app"
AGENT_USER = "auditlock-t-agent"


@dataclass(frozen=True)
class User:
    """A local user: name, uid, its own group."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class TwoUsers:
    """The application's user, the agent's user and the spool's group they share (and no one else)."""

    app: User
    agent: User
    spool_gid: int

    def popen_args(self, user: User) -> dict[str, object]:
        """`subprocess.Popen`/`run` keywords that start a process as `user`, with the spool's group."""
        return {"user": user.uid, "group": user.gid, "extra_groups": [self.spool_gid], "cwd": REPO}


def _group_gid(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        _run_tool(["groupadd", "--system", name])
        return grp.getgrnam(name).gr_gid


def _user(name: str) -> User:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _run_tool(["useradd", "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin",
                   "--groups", SPOOL_GROUP, name])
        entry = pwd.getpwnam(name)
    return User(name, entry.pw_uid, entry.pw_gid)


def _run_tool(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    # 9: the name exists (a parallel session created it first); the lookup after this call finds it.
    if done.returncode not in (0, 9):
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")


def users_unavailable() -> str | None:
    """Why the two users cannot be made here, or None."""
    if os.geteuid() != 0:
        return "creating two users and switching to them needs root (CI runs as root)"
    missing = [tool for tool in ("useradd", "groupadd") if _which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (apt-get install -y passwd)"
    return None


def _which(tool: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin", *os.environ.get("PATH", "").split(os.pathsep)):
        if directory and os.access(os.path.join(directory, tool), os.X_OK):
            return os.path.join(directory, tool)
    return None


def make_two_users() -> TwoUsers:
    """The application's and the agent's users and their shared group, created if missing."""
    spool_gid = _group_gid(SPOOL_GROUP)
    return TwoUsers(_user(APP_USER), _user(AGENT_USER), spool_gid)


def unreachable_interpreter(users: TwoUsers) -> str | None:
    """Why the application's user cannot run this interpreter on the checkout, or None."""
    done = subprocess.run([sys.executable, "-c", "import auditlock.spool.writer, tests.support.users"],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=child_env(REPO), **users.popen_args(users.app))  # type: ignore[call-overload]
    if done.returncode == 0:
        return None
    return (f"user {users.app.name} cannot run {sys.executable} on {REPO} ({done.stderr.strip()[-300:]}): give "
            "every directory on both paths o+x, e.g. `chmod o+x /root` for an interpreter under /root (.ci/run does)")


def child_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for a process of another user: this one's, with a HOME it may use and the checkout on
    PYTHONPATH."""
    return {**os.environ, "HOME": str(home),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **extra}


@pytest.fixture(scope="session")
def two_users() -> TwoUsers:
    """Two real users sharing the spool's group; skips when they cannot be made (fails if required)."""
    reason = users_unavailable()
    users = None if reason else make_two_users()
    if users is not None:
        reason = unreachable_interpreter(users)
    if reason is not None:
        # CI sets AUDITLOCK_REQUIRE_USERS=1 so the two-identities tests cannot silently skip there.
        if os.environ.get(REQUIRE_USERS_ENV) == "1":
            pytest.fail(f"{reason} [{REQUIRE_USERS_ENV}=1]", pytrace=False)
        pytest.skip(reason)
    assert users is not None
    return users


# --- the application's side, run as the application's user ---------------------------------------------


def _write(config_path: str, count: int, torn: bool) -> None:
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore
    from auditlock.spool.writer import SpoolWriter

    config = load_config(Path(config_path))
    writer = SpoolWriter(config.spool, max_event_bytes=config.events.max_event_bytes)
    core = AuditCore(config, writer=writer)
    ids = []
    with auditlock.actor("user#16"):
        for n in range(count):
            record = core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
            assert record is not None
            ids.append(record["event_id"])
    if torn:
        segment = writer._segment  # a test child playing a writer killed mid-line
        assert segment is not None
        os.write(segment.fd, b'{"schema":"auditlock/1","event_id":"0190')
        os.write(1, orjson.dumps(ids) + b"\n")
        os._exit(0)  # no close: the segment stays open, its last line torn
    writer.close()
    os.write(1, orjson.dumps(ids) + b"\n")


def _overflow(config_path: str, count: int) -> None:
    import auditlock
    from auditlock.config import load_config
    from auditlock.handler.core import AuditCore

    core = AuditCore(load_config(Path(config_path)))
    with auditlock.actor("user#16"):
        for n in range(count):
            core.emit("order.updated", {"target_type": "Order", "target_id": n, "status": "paid"})
    core.writer.close()
    os.write(1, orjson.dumps(core.dropped) + b"\n")


def _attempt(operations: list[list[str]]) -> None:
    results = {}
    for op, *paths in operations:
        try:
            _OPERATIONS[op](*paths)
            results[" ".join([op, *paths])] = "ok"
        except OSError as exc:
            results[" ".join([op, *paths])] = errno.errorcode.get(exc.errno or 0, str(exc))
    os.write(1, orjson.dumps(results) + b"\n")


def _append(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    try:
        os.write(fd, b'{"not":"an event"}\n')
    finally:
        os.close(fd)


def _create(path: str) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


_OPERATIONS = {"create": _create, "append": _append, "unlink": os.unlink, "rename": os.rename, "mkdir": os.mkdir,
               "rmdir": os.rmdir, "chmod": lambda path: os.chmod(path, 0o777)}


def attempt(users: TwoUsers, user: User, home: Path, operations: list[list[str]]) -> dict[str, str]:
    """Run file operations (`[op, path, ...]`, ops in `_OPERATIONS`) as `user`; "ok" or the errno's name each."""
    done = subprocess.run([sys.executable, "-m", "tests.support.users", "attempt", orjson.dumps(operations).decode()],
                          capture_output=True, timeout=120, check=True, env=child_env(home),
                          **users.popen_args(user))  # type: ignore[call-overload]
    results: dict[str, str] = orjson.loads(done.stdout)
    return results


def main() -> None:
    """`write CONFIG COUNT [--torn]`, `overflow CONFIG COUNT`, `attempt OPERATIONS_JSON`: see the module
    docstring."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.users")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write")
    write.add_argument("config")
    write.add_argument("count", type=int)
    write.add_argument("--torn", action="store_true")
    overflow = commands.add_parser("overflow")
    overflow.add_argument("config")
    overflow.add_argument("count", type=int)
    commands.add_parser("attempt").add_argument("operations")
    args = parser.parse_args()
    if args.command == "write":
        _write(args.config, args.count, args.torn)
    elif args.command == "overflow":
        _overflow(args.config, args.count)
    else:
        _attempt(orjson.loads(args.operations))


if __name__ == "__main__":
    main()
