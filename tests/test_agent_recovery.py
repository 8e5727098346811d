"""Recovery of dead writers' open segments (`recover_dead_writers`), in process and fast: a torn tail is cut and
the segment sealed, an empty one removed, a damaged one quarantined with its reason — found by the mutation run
(docs/testing.md), where only the agent subprocess tests reached these paths.

Segments are written by the real writer, renamed back to `.open` (a writer that died: nobody holds the flock) and
edited on disk as a crash or a bad disk would leave them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from auditlock.agent.recovery import _lock_if_dead, quarantine, recover_dead_writers
from auditlock.config import Config
from auditlock.spool.format import NEW_SUFFIX, QUARANTINE_DIR, SEALED_SUFFIX
from auditlock.spool.reader import scan_segment
from tests.support.written_spool import reopen, write_orders


def dead_writers_segment(config: Config, count: int = 5) -> Path:
    """A dead writer's open segment holding `count` events and its clean-end record."""
    [path] = write_orders(config, count)
    return reopen(path)


class TestTornTail:
    """Invariant: recovery cuts only a torn last line, then seals the segment with every complete line."""

    def test_torn_last_line_is_cut_and_the_segment_sealed(self, config: Config) -> None:
        """Invariant (torn tail cut, nothing else): the complete lines are sealed byte for byte."""
        path = dead_writers_segment(config)
        complete = path.read_bytes()
        path.write_bytes(complete + b'{"schema": "auditlock/1", "seq": 9')

        report = recover_dead_writers(config.spool.dir)

        sealed = path.with_name(path.name.replace(".open", ""))
        assert (report.truncated, report.sealed, report.quarantined) == ([path.name], [path.name], [])
        assert sealed.read_bytes() == complete
        assert not path.exists()

    def test_unparseable_last_line_with_newline_is_torn(self, config: Config) -> None:
        """Invariant (torn tail cut, nothing else): an unparseable last line counts as torn even with a newline."""
        path = dead_writers_segment(config)
        complete = path.read_bytes()
        path.write_bytes(complete + b"\x00" * 12 + b"\n")

        report = recover_dead_writers(config.spool.dir)

        assert (report.truncated, report.sealed, report.quarantined) == ([path.name], [path.name], [])
        assert path.with_name(path.name.replace(".open", "")).read_bytes() == complete

    def test_intact_segment_is_sealed_untouched(self, config: Config) -> None:
        """Invariant (dead writer's segment sealed): no torn tail, nothing cut; the scan of the sealed file is clean."""
        path = dead_writers_segment(config)
        data = path.read_bytes()

        report = recover_dead_writers(config.spool.dir)

        [sealed] = config.spool.dir.glob(f"*{SEALED_SUFFIX}")
        assert (report.sealed, report.truncated) == ([path.name], [])
        assert sealed.read_bytes() == data
        scan = scan_segment(sealed)
        assert (scan.damage, scan.torn_tail, scan.lines) == (None, False, len(data.splitlines()))


class TestEmptySegment:
    """Invariant: a dead writer's open segment without one complete line is removed, never sealed or shipped."""

    def test_segment_with_only_a_torn_line_is_removed(self, config: Config) -> None:
        """Invariant (no empty segment sealed): only a torn line → removed and reported."""
        path = dead_writers_segment(config)
        path.write_bytes(path.read_bytes().splitlines(keepends=True)[0][:-5])

        report = recover_dead_writers(config.spool.dir)

        assert report.removed_empty == [path.name]
        assert report.sealed == []
        assert not any(config.spool.dir.glob("*.jsonl"))


class TestQuarantine:
    """Invariant: a damaged dead writer's segment is moved whole to quarantine/ with a reason file, never sealed."""

    def test_damaged_middle_line_quarantines_with_reason(self, config: Config) -> None:
        """Invariant (damage kept, not shipped): every byte in quarantine/, the reason names the line."""
        path = dead_writers_segment(config)
        lines = path.read_bytes().splitlines(keepends=True)
        event = orjson.loads(lines[2])
        event["seq"] += 7
        lines[2] = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
        path.write_bytes(b"".join(lines))
        data = path.read_bytes()

        report = recover_dead_writers(config.spool.dir)

        quarantine = config.spool.dir / QUARANTINE_DIR
        assert (report.quarantined, report.sealed, report.truncated) == ([path.name], [], [])
        assert (quarantine / path.name).read_bytes() == data
        reason = (quarantine / f"{path.name}.reason.txt").read_text()
        assert "damaged open segment of a dead writer" in reason
        assert "line 3" in reason
        assert not path.exists()
        assert stat.S_IMODE(quarantine.stat().st_mode) == 0o700, "quarantined events stay private to the spool's owner"


    def test_two_damaged_segments_are_both_quarantined(self, make_config: Callable[..., Config]) -> None:
        """Invariant (damage kept, not shipped): quarantine/ existing already does not stop the second move."""
        paths = write_orders(make_config(spool={"segment_max_bytes": 4096}), 40)[:2]
        for path in paths:
            path.write_bytes(b"\x00damaged\n" + path.read_bytes())
        opened = [reopen(path) for path in paths]

        report = recover_dead_writers(opened[0].parent)

        assert sorted(report.quarantined) == sorted(path.name for path in opened)
        assert all((path.parent / QUARANTINE_DIR / path.name).exists() for path in opened)


class TestVanishedSegment:
    """A segment sealed or removed between recovery's listing and its open is skipped, not an error."""

    def test_vanished_file_yields_no_lock(self, tmp_path: Path) -> None:
        """Invariant (recovery never fails on a race with a writer's rename): a missing file gives no fd."""
        with _lock_if_dead(tmp_path / "gone.open.jsonl") as fd:
            assert fd is None


class TestStrayFiles:
    """Invariant: a file that only looks like an open segment is left alone and stops nothing."""

    def test_stray_open_name_does_not_stop_recovery_of_the_rest(self, config: Config) -> None:
        """Invariant (every dead writer recovered): a stray `.open.jsonl` sorted first is skipped, not a stop."""
        path = dead_writers_segment(config)
        stray = config.spool.dir / "0-not-a-segment.open.jsonl"
        stray.write_bytes(b"not an event\n")
        assert sorted(config.spool.dir.glob("*.open.jsonl"))[0] == stray

        report = recover_dead_writers(config.spool.dir)

        assert report.sealed == [path.name]
        assert stray.read_bytes() == b"not an event\n"


class TestSizeBound:
    """Invariant: only a dead writer's segment *larger* than the read bound is refused (quarantined); one within it,
    to the byte, is sealed."""

    @pytest.mark.parametrize("slack", [0, 1000], ids=["exactly-the-bound", "under-the-bound"])
    def test_segment_within_the_bound_is_sealed(self, config: Config, slack: int) -> None:
        """Invariant (no genuine segment refused): size == max_bytes, or well under it, seals."""
        path = dead_writers_segment(config)

        report = recover_dead_writers(config.spool.dir, max_bytes=path.stat().st_size + slack)

        assert (report.sealed, report.quarantined) == ([path.name], [])

    def test_segment_over_the_bound_is_quarantined_with_the_reason(self, config: Config) -> None:
        """Invariant (refused, never read, never lost): one byte over → quarantined whole, reason says why."""
        path = dead_writers_segment(config)
        data = path.read_bytes()

        report = recover_dead_writers(config.spool.dir, max_bytes=len(data) - 1)

        quarantine_dir = config.spool.dir / QUARANTINE_DIR
        assert (report.quarantined, report.sealed) == ([path.name], [])
        assert (quarantine_dir / path.name).read_bytes() == data
        assert "refused open segment" in (quarantine_dir / f"{path.name}.reason.txt").read_text()


class TestUnsafeStagingFile:
    """Invariant: a `.new` name that is not a regular file is left alone, and recovery of the rest goes on."""

    def test_fifo_staging_name_is_skipped(self, config: Config) -> None:
        """Invariant (recovery never stops on a planted file): a FIFO `.new` stays; the dead segment is sealed."""
        path = dead_writers_segment(config)
        fifo = config.spool.dir / f"{'b' * 32}.0000000000000000{NEW_SUFFIX}"
        os.mkfifo(fifo)

        report = recover_dead_writers(config.spool.dir)

        assert report.sealed == [path.name]
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)

    def test_unsafe_staging_names_do_not_stop_the_removal_of_dead_ones(self, config: Config) -> None:
        """Invariant (every dead writer's leftovers go): FIFOs among empty `.new` files stop none of their removals.

        Created interleaved, so that in creation order, its reverse or a hashed directory order a FIFO is (almost
        surely) listed before some empty file."""
        config.spool.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fifos, empty = [], []
        for n in range(5):
            fifo = config.spool.dir / f"{n:032x}.0000000000000000{NEW_SUFFIX}"
            os.mkfifo(fifo)
            fifos.append(fifo)
            dead = config.spool.dir / f"{n + 16:032x}.0000000000000000{NEW_SUFFIX}"
            dead.write_bytes(b"")
            empty.append(dead)

        report = recover_dead_writers(config.spool.dir)

        assert sorted(report.removed_empty) == sorted(path.name for path in empty)
        assert all(stat.S_ISFIFO(os.lstat(fifo).st_mode) for fifo in fifos)


class TestQuarantineNames:
    """Invariant: nothing in quarantine/ is ever replaced; a name quarantined again gets the next `.N`."""

    def test_same_name_three_times(self, config: Config) -> None:
        """Invariant (quarantine keeps everything): three segments of one name → NAME, NAME.1, NAME.2 with reasons."""
        path = dead_writers_segment(config)
        data = path.read_bytes()
        for n in range(3):
            path.write_bytes(data + bytes([n]))
            quarantine(config.spool.dir, path, f"reason {n}")

        quarantine_dir = config.spool.dir / QUARANTINE_DIR
        for n, name in enumerate([path.name, f"{path.name}.1", f"{path.name}.2"]):
            assert (quarantine_dir / name).read_bytes() == data + bytes([n])
            assert (quarantine_dir / f"{name}.reason.txt").read_text().endswith(f" reason {n}\n")

    def test_name_taken_by_a_file_without_reason_is_not_replaced(self, config: Config) -> None:
        """Invariant (quarantine keeps everything): a NAME already there without its reason file → NAME.1."""
        path = dead_writers_segment(config)
        quarantine_dir = config.spool.dir / QUARANTINE_DIR
        quarantine_dir.mkdir(mode=0o700)
        (quarantine_dir / path.name).write_bytes(b"kept\n")

        target = quarantine(config.spool.dir, path, "second")

        assert target.name == f"{path.name}.1"
        assert (quarantine_dir / path.name).read_bytes() == b"kept\n"
