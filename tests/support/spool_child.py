"""A writing process for spool tests, and the parent-side helpers that drive and check it.

Run as ``python -m tests.support.spool_child --dir DIR --mode MODE ...`` (cwd = the repository root) or by
path. The child builds a Config with ``auditlock.config.build_config`` and emits ``order.updated`` events
inside ``with auditlock.actor("user#1")``, through a structlog pipeline (``--api structlog``, the default)
or ``AuditProcessor(cfg).core.emit`` (``--api core``). After each call *returns* it writes one JSON line to
stdout with one unbuffered ``os.write`` (atomic for a pipe, so forked children never interleave):

    {"pid": ..., "writer": ..., "seq": ..., "event_id": ..., "n": ...}

so the parent knows exactly which calls returned. Modes:

- ``plain``: emit ``--count`` events and exit normally (the writer seals its segment at exit).
- ``crash``: emit until killed (``--count`` is only a safety cap), small segments so rotations happen. With
  ``--threads N`` (``--api core`` only) N threads emit at once through one writer.
- ``fork``: emit ``--count`` events (first use, so a segment is open), then ``os.fork()`` ``--children``
  children that each emit ``--child-events`` more while the parent emits ``--after-events``; the parent waits
  for its children. With ``--hold`` the children then wait for EOF on stdin before exiting, and the parent
  leaves without closing its writer (``os._exit``), so a test can look at the locks a dead parent left.

``--gate`` makes the child wait for one byte on stdin before its first event, so a test can start several
children writing at (nearly) the same moment.

The parent-side half (`start_child`, `LineReader`, `read_spool`) lives here too so the tests share one
definition of "the spool is intact".
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the child -------------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Any:
    from auditlock.config import build_config

    return build_config(
        {
            "service": "spool-child",
            "spool": {
                "dir": args.dir,
                "durability": args.durability,
                "segment_max_bytes": args.segment_max_bytes,
            },
            # keep_in_app_log: the structlog call then returns the record's view (with its event_id).
            "events": {"include": ["order.*"], "keep_in_app_log": args.api == "structlog"},
            "targets": {"Order": {"fields": ["status", "n"]}},
            "retention": {"default": "std", "classes": {"std": {"days": 1}}},
        }
    )


class _Emitter:
    """Emits one event per call through the chosen API and reports it once the call has returned."""

    def __init__(self, args: argparse.Namespace) -> None:
        import structlog

        import auditlock

        self.processor = auditlock.AuditProcessor(_config(args))
        self.api = args.api
        if self.api == "structlog":
            structlog.configure(processors=[self.processor], logger_factory=structlog.ReturnLoggerFactory())
            self.log = structlog.get_logger()

    def emit(self, n: int) -> None:
        before, after = {"status": "open", "n": n}, {"status": "paid", "n": n + 1}
        fields = {"target_type": "Order", "target_id": n, "before": before, "after": after}
        if self.api == "structlog":
            _args, view = self.log.info("order.updated", **fields)
            event_id = view["event_id"]
            writer = self.processor.core.writer
            seq, writer_id = writer.chain.seq - 1, writer.writer_id  # one thread per process (--threads 1): exact
        else:
            record = self.processor.core.emit("order.updated", fields)
            assert record is not None
            event_id, seq, writer_id = record["event_id"], record["seq"], record["writer"]
        _report({"pid": os.getpid(), "writer": writer_id, "seq": seq, "event_id": event_id, "n": n})


def _report(obj: dict[str, Any]) -> None:
    data = orjson.dumps(obj) + b"\n"
    try:
        os.write(1, data)  # one write of < PIPE_BUF bytes: atomic, unbuffered, survives fork
    except BrokenPipeError:
        os._exit(3)  # the parent is gone: stop writing


def _emit_many(emitter: _Emitter, start: int, count: int) -> None:
    import auditlock

    with auditlock.actor("user#1"):
        for n in range(start, start + count):
            emitter.emit(n)


def _threads_mode(emitter: _Emitter, args: argparse.Namespace) -> None:
    """`--threads` emitters through one writer, each on its own range of n, until killed (or the cap)."""
    import threading

    count = args.count if args.count > 0 else 10**9
    threads = [threading.Thread(target=_emit_many, args=(emitter, (index + 1) * 10**10, count))
               for index in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _fork_mode(emitter: _Emitter, args: argparse.Namespace) -> None:
    _emit_many(emitter, 0, args.count)  # first use: the writer exists and has an open segment
    children = []
    for index in range(args.children):
        pid = os.fork()
        if pid == 0:
            _child_of_fork(emitter, args, index)  # never returns
        children.append(pid)
    _emit_many(emitter, 1_000_000, args.after_events)
    if args.hold:
        os._exit(0)  # die without closing the writer: its segment stays .open for recovery
    for pid in children:
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"child {pid} failed with status {status}")
    emitter.processor.close()


def _child_of_fork(emitter: _Emitter, args: argparse.Namespace, index: int) -> None:
    code = 0
    try:
        _emit_many(emitter, (index + 1) * 10_000_000, args.child_events)
        if args.hold:
            sys.stdin.buffer.read()  # until the test closes our stdin
        emitter.processor.close()
    except BaseException as exc:  # report and leave: a forked child must never return into the parent's code
        os.write(2, f"forked child failed: {exc!r}\n".encode())
        code = 1
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run a mode."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--mode", choices=["plain", "crash", "fork"], default="plain")
    parser.add_argument("--durability", choices=["sync", "group", "process"], default="sync")
    parser.add_argument("--api", choices=["structlog", "core"], default="structlog")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--child-events", type=int, default=100)
    parser.add_argument("--after-events", type=int, default=100)
    parser.add_argument("--segment-max-bytes", type=int, default=4096)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="crash mode: emitting threads (needs --api core)")
    parser.add_argument("--gate", action="store_true", help="wait for a byte on stdin before the first event")
    args = parser.parse_args(argv)
    if args.threads > 1 and (args.api != "core" or args.mode != "crash"):
        parser.error("--threads needs --mode crash --api core (a structlog view has no seq)")

    emitter = _Emitter(args)
    if args.gate:
        sys.stdin.buffer.read(1)  # start together with the other writers of the test
    if args.mode == "plain":
        _emit_many(emitter, 0, args.count)
        emitter.processor.close()
    elif args.mode == "crash" and args.threads > 1:
        _threads_mode(emitter, args)
    elif args.mode == "crash":
        _emit_many(emitter, 0, args.count if args.count > 0 else 10**9)
    else:
        _fork_mode(emitter, args)


# --- the parent side -------------------------------------------------------------------------------------


def start_child(spool: Path, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """Start this script as a subprocess writing into `spool`, stdout piped."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.spool_child", "--dir", str(spool), *args],
        cwd=REPO_ROOT, env=env, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


class LineReader:
    """Reads the child's report lines from a pipe without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""
        self.eof = False

    def _pump(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"child {self.proc.pid} reported {len(self.lines)} lines before the deadline; "
                                 f"stderr: {self._stderr()}")
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if not ready:
            return
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.eof = True
            if self._buffer:
                raise AssertionError(f"child {self.proc.pid} left a partial report line: {self._buffer!r}")
            return
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self.lines.extend(orjson.loads(line) for line in complete)

    def until_count(self, count: int, timeout: float = 30.0) -> None:
        """Wait until at least `count` lines were reported (fails if the child ends first)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count:
            if self.eof:
                raise AssertionError(f"child {self.proc.pid} ended after {len(self.lines)} of {count} lines; "
                                     f"stderr: {self._stderr()}")
            self._pump(deadline)

    def until_eof(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Read every remaining line until every holder of the pipe closed it."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            self._pump(deadline)
        return self.lines

    def _stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")[-2000:]


def run_to_end(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Every line a child reports until it exits; fails unless it exits with 0."""
    reader = LineReader(proc)
    lines = reader.until_eof(timeout)
    code = proc.wait(timeout=timeout)
    assert proc.stderr is not None
    stderr = proc.stderr.read().decode(errors="replace")
    assert code == 0, f"child exited with {code}: {stderr[-3000:]}"
    return lines


@dataclass
class SpoolContents:
    """What a spool directory holds: every segment's scan and every intact event (nothing asserted yet)."""

    scans: list[Any] = field(default_factory=list)  # SegmentScan of every segment file, sorted by name
    events: list[dict[str, Any]] = field(default_factory=list)  # the good lines, parsed
    files: dict[str, str] = field(default_factory=dict)  # event_id -> segment file name
    foreign: list[str] = field(default_factory=list)  # "<file>: writer <w>" for lines of another writer
    closings: list[dict[str, Any]] = field(default_factory=list)  # auditlock.writer_closed records

    @property
    def ids(self) -> Counter[str]:
        """How often each event_id occurs."""
        return Counter(event["event_id"] for event in self.events)

    @property
    def writers(self) -> dict[str, list[Any]]:
        """Each writer's segment scans, sorted by first_seq."""
        chains: dict[str, list[Any]] = {}
        for scan in sorted(self.scans, key=lambda s: (s.name.writer, s.name.first_seq)):
            chains.setdefault(scan.name.writer, []).append(scan)
        return chains

    def seqs(self, writer: str) -> list[int]:
        """The seq numbers of one writer's events, in file order."""
        return [event["seq"] for event in self.events if event["writer"] == writer]

    def damage(self) -> list[str]:
        """Segments with a bad line before the last."""
        return [f"{scan.path.name}: {scan.damage}" for scan in self.scans if scan.damage is not None]

    def torn(self) -> list[str]:
        """Segments whose last line is incomplete."""
        return [scan.path.name for scan in self.scans if scan.torn_tail]

    def chain_breaks(self, *, complete: bool = True) -> list[str]:
        """Breaks in the per-writer seq/prev chains across segments (empty list: every chain is intact).

        Per writer, the segments sorted by first_seq start at seq 0 with prev = 64 zeros; each segment starts
        at the seq after the previous one's last line and its first `prev` is the previous `last_hash`. An
        empty segment, and a segment with a torn tail, may only be a writer's last. With `complete=False`
        a writer's oldest segments may be gone (shipped and deleted): its chain starts where it starts.
        """
        from auditlock.spool.format import ZERO_HASH

        breaks = []
        for writer, chain in self.writers.items():
            expected_seq, expected_prev = 0, ZERO_HASH
            if not complete:
                expected_seq, expected_prev = chain[0].name.first_seq, chain[0].first_prev
            for index, scan in enumerate(chain):
                where = f"writer {writer}, segment {scan.path.name}"
                is_last = index == len(chain) - 1
                if scan.name.first_seq != expected_seq:
                    breaks.append(f"{where}: starts at seq {scan.name.first_seq}, expected {expected_seq}")
                if scan.torn_tail and not is_last:
                    breaks.append(f"{where}: a torn segment is followed by more segments")
                if scan.lines == 0:
                    if not is_last:
                        breaks.append(f"{where}: an empty segment is followed by more segments")
                    continue
                if scan.first_prev != expected_prev:
                    breaks.append(f"{where}: its first prev does not continue the chain")
                expected_seq, expected_prev = scan.next_seq, scan.last_hash
        return breaks


def scan_spool(spool: Path) -> SpoolContents:
    """Scan every segment file of a spool directory with `scan_segment` and parse its intact lines."""
    from auditlock.spool.format import parse_segment_name
    from auditlock.spool.reader import parse_event, scan_segment

    contents = SpoolContents()
    if not spool.exists():
        return contents
    for path in sorted(spool.iterdir()):
        name = parse_segment_name(path.name)
        if name is None:
            continue
        scan = scan_segment(path)
        contents.scans.append(scan)
        for line in path.read_bytes()[: scan.good_bytes].splitlines():
            event = parse_event(line)
            assert event is not None, f"{path.name}: a line scan_segment accepted does not parse: {line[:80]!r}"
            if event["writer"] != name.writer:
                contents.foreign.append(f"{path.name}: writer {event['writer']}")
            if event["event_type"] == "auditlock.writer_closed":
                contents.closings.append(event)  # a writer's clean-end record, not an event a test emitted
                continue
            contents.events.append(event)
            contents.files[event["event_id"]] = path.name
    return contents


def read_spool(spool: Path, *, allow_torn_tail: bool = False, complete: bool = True) -> SpoolContents:
    """`scan_spool`, then fail on damage, on a torn tail (unless allowed), on foreign lines, on chain breaks.

    `complete=False`: segments were deleted from the front (see `SpoolContents.chain_breaks`).
    """
    contents = scan_spool(spool)
    assert not contents.damage(), contents.damage()
    assert allow_torn_tail or not contents.torn(), f"torn last lines: {contents.torn()}"
    assert not contents.foreign, f"lines in another writer's segment: {contents.foreign}"
    breaks = contents.chain_breaks(complete=complete)
    assert not breaks, breaks
    return contents


def check_reported(contents: SpoolContents, reported: list[dict[str, Any]]) -> None:
    """Every reported (returned) event is in the spool exactly once, with the reported writer and seq."""
    ids = contents.ids
    duplicates = [event_id for event_id, count in ids.items() if count > 1]
    assert not duplicates, f"events in the spool more than once: {duplicates[:5]}"
    by_id = {event["event_id"]: event for event in contents.events}
    missing = [line for line in reported if line["event_id"] not in by_id]
    assert not missing, f"{len(missing)} returned events are not in the spool, first: {missing[0]}"
    for line in reported:
        event = by_id[line["event_id"]]
        assert (event["writer"], event["seq"]) == (line["writer"], line["seq"]), (event, line)
        assert event["payload"]["changes"]["n"] == [line["n"], line["n"] + 1], (event, line)


if __name__ == "__main__":
    main()
