"""A fork server for the mutation run: pytest started once per run, not once per mutant (see docs/testing.md).

    python tools/mutation_runner.py serve SOCKET TIMEOUT_S [--select MODULE...] -- PYTEST-ARGS...
                                                                    (tools/mutation.sh starts it)
    python tools/mutation_runner.py run SOCKET                                   (Cosmic Ray's test command)

Starting pytest with this project's plugins and conftest costs about 3 s of CPU, which on a loaded two-core
machine is most of a mutant's time. The server imports every third-party module a test run imports (pytest, its
plugins, boto3, ...) but nothing of `auditlock` or `tests`, then forks one child per mutant; the child runs
`pytest.main` in the copy's tree, so it imports `auditlock` — with the mutant Cosmic Ray just wrote — afresh.
The client's exit status is the child's: 0 means the mutant survived. The child runs in a process group of its
own; when the client goes away (Cosmic Ray's timeout killed it) the server kills that whole group before it
takes the next mutant, so no test run outlives its mutant and no status reaches the wrong client. A child still
running after TIMEOUT_S is ended by its alarm. If the server cannot be reached, the client runs pytest itself
(slow, but never a mutant counted as killed because the runner was down). With `--select`, each mutant runs only
the tests that executed the statements it changed (tools/mutation_select.py; the map is built before serving).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import mutation_exception_name
from mutation_select import Selection

OWN = ("auditlock", "tests", "__main__", "conftest")


def _modules_of_a_run(pytest_args: list[str]) -> list[str]:
    """The modules a collection of these tests imports, minus the project's own (listed by a throwaway process)."""
    probe = ("import sys, pytest; pytest.main(['--co', '-q', '-p', 'no:cacheprovider', *sys.argv[1:]]); "
             "print('\\n'.join(sorted(sys.modules)), file=sys.stderr)")
    listed = subprocess.run([sys.executable, "-c", probe, *pytest_args], capture_output=True, text=True, check=False)
    return [m for m in listed.stderr.split() if not m.startswith(OWN)]


def _preload(names: list[str]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: S112 - one that does not import on its own is imported by the child, as usual
            continue


def _args_file(path: str) -> Path:
    return Path(f"{path}.args.json")


def _child(pytest_args: list[str], timeout_s: int) -> None:
    import pytest  # noqa: PLC0415 - imported by the server's preload already; named here for the child

    os.setpgid(0, 0)
    signal.alarm(timeout_s)
    code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *pytest_args])
    sys.stdout.flush()
    os._exit(int(code))


def _options(pytest_args: list[str]) -> list[str]:
    """The arguments that are not test paths (`-m "not rgw"`, ...): kept when running selected tests."""
    return [a for a in pytest_args if a.startswith("-") or not Path(a.split("::")[0]).exists()]


def _selection(path: str, modules: list[str], pytest_args: list[str]) -> Selection | None:
    """The group's coverage map (built by one run of its tests under coverage, once per run directory)."""
    if not modules:
        return None
    map_file = Path(path).parent / "coverage-map.json"
    if not map_file.exists():
        print("mutation runner: building the coverage map (one run of the tests under coverage)", flush=True)
        built = subprocess.run([sys.executable, str(Path(__file__).with_name("mutation_select.py")), "map",
                                f"{map_file}.part", *modules, "--", *pytest_args], check=False)
        if built.returncode != 0:
            sys.exit(f"mutation runner: the tests fail unmutated under coverage (exit {built.returncode})")
        os.replace(f"{map_file}.part", map_file)
    return Selection(map_file, Path.cwd())


def serve(path: str, timeout_s: int, pytest_args: list[str], modules: list[str]) -> None:
    """Preload, then answer each connection with the exit status of one forked pytest run."""
    _define_exception_name()
    _args_file(path).write_text(json.dumps(pytest_args))
    selection = _selection(path, modules, pytest_args)
    options = _options(pytest_args)
    _preload(_modules_of_a_run(pytest_args))
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    print(f"mutation runner: serving {path}", flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.recv(65536) or b"{}")
            if request.get("stop"):
                return
            args, note = pytest_args, "every test"
            if selection is not None:
                choice = selection.choose()
                note = choice.why
                if not choice.everything:
                    if not choice.tests:
                        print(f"mutation runner: {note}", flush=True)
                        conn.sendall(json.dumps({"code": 0, "note": note}).encode())
                        continue
                    args = [*options, *choice.tests]
            print(f"mutation runner: {note}", flush=True)
            pid = os.fork()
            if pid == 0:
                server.close()
                conn.close()
                os.chdir(request["cwd"])
                _child(args, timeout_s)
            with contextlib.suppress(OSError):  # also set here: the group must exist before any killpg
                os.setpgid(pid, pid)
            code = _wait_or_abandon(pid, conn)
            if code is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps({"code": code, "note": note}).encode())


def _wait_or_abandon(pid: int, conn: socket.socket) -> int | None:
    """The child's exit status; or, if the client hangs up first, None once the child's group is killed."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code
        readable, _, _ = select.select([conn], [], [], 0.2)
        if readable and not conn.recv(1):  # the client is gone: its mutant is being replaced
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            print(f"mutation runner: client gone, test run {pid} killed", flush=True)
            return None


def _receive_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def run(path: str) -> int:
    """Ask the server for one test run in the current directory; exit with its status."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(path)
            conn.sendall(json.dumps({"cwd": os.getcwd()}).encode())
            reply = json.loads(_receive_all(conn))
        print(f"mutation runner: {reply['note']}")
        return int(reply["code"])
    except (OSError, ValueError, KeyError) as exc:
        print(f"mutation runner not reachable ({exc}): running pytest directly", file=sys.stderr)
        args = json.loads(_args_file(path).read_text())
        command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
        return subprocess.run(command, check=False).returncode


def _define_exception_name() -> None:
    """Cosmic Ray's exception name in this server and so in every child it forks, and the `.pth` line for the
    subprocesses the tests start (tools/mutation_exception_name.py): a server started before the line was
    installed forked children without the name, and an exception-replacer mutant counted as killed falsely."""
    mutation_exception_name.install()
    exec(mutation_exception_name.LINE)  # noqa: S102 - the fixed line of that module, as the .pth runs it


def main(argv: list[str]) -> int:
    if argv[0] == "serve":
        split = argv.index("--")
        modules = argv[4:split] if argv[3:4] == ["--select"] else []
        serve(argv[1], int(argv[2]), argv[split + 1:], modules)
        return 0
    if argv[0] == "stop":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(argv[1])
            conn.sendall(b'{"stop": true}')
        return 0
    return run(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
