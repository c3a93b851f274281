"""Unit tests of a set's printer log: partial lines, the ring, rotation, file tails."""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from labd.printlog import MAX_LINE, PrintLog, read_log_tail, rotated_path


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "7.log"


@pytest.fixture
def log(log_path: Path) -> Iterator[PrintLog]:
    p = PrintLog(log_path)
    yield p
    p.close()


def test_creates_directory_and_file(log_path: Path, log: PrintLog) -> None:
    assert log_path.exists()
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_partial_lines_wait_for_their_newline(log_path: Path, log: PrintLog) -> None:
    log.append("Time: 1\nTim")
    assert log.lines() == ([(1, "Time: 1")], 1)
    log.append("e: ")
    assert log.lines() == ([(1, "Time: 1")], 1)
    log.append("2\nTime: 3\r\nTime: 4\n")
    assert log.lines() == ([(1, "Time: 1"), (2, "Time: 2"), (3, "Time: 3"), (4, "Time: 4")], 4)
    assert log_path.read_text() == "Time: 1\nTime: 2\nTime: 3\nTime: 4\n"


def test_empty_lines_are_lines(log: PrintLog) -> None:
    log.append("\n\na\n")
    assert log.lines() == ([(1, ""), (2, ""), (3, "a")], 3)


def test_flush_keeps_the_partial_line(log_path: Path, log: PrintLog) -> None:
    log.append("a\nhalf")
    log.flush()
    assert log.lines() == ([(1, "a"), (2, "half")], 2)
    assert log_path.read_text() == "a\nhalf\n"
    log.flush()  # nothing pending: no empty line
    assert log.lines()[1] == 2


def test_long_lines_are_cut(log: PrintLog) -> None:
    log.append("x" * (MAX_LINE + 10) + "\n")
    log.append("y" * MAX_LINE)
    log.append("y" * MAX_LINE)  # a partial line cannot grow without bound
    log.append("y\nz\n")
    lines, last = log.lines()
    assert last == 3
    assert [len(text) for _, text in lines] == [MAX_LINE, MAX_LINE, 1]


def test_ring_keeps_the_newest_lines(tmp_path: Path) -> None:
    log = PrintLog(tmp_path / "1.log", ring=10)
    try:
        log.append("".join(f"Time: {i}\n" for i in range(1, 26)))
        lines, last = log.lines(limit=100)
        assert last == 25
        assert [seq for seq, _ in lines] == list(range(16, 26))
        assert lines[-1] == (25, "Time: 25")
        # lines that left the ring are skipped: the next ones come from the oldest kept
        assert [s for s, _ in log.lines(after=3, limit=2)[0]] == [16, 17]
    finally:
        log.close()


def test_lines_after_and_limit(log: PrintLog) -> None:
    assert log.lines() == ([], 0)
    log.append("".join(f"{i}\n" for i in range(1, 11)))
    assert [s for s, _ in log.lines(limit=3)[0]] == [8, 9, 10]
    assert [s for s, _ in log.lines(after=2, limit=3)[0]] == [3, 4, 5]
    assert log.lines(after=10) == ([], 10)
    assert log.lines(after=99) == ([], 10)
    assert log.lines(limit=0) == ([], 10)
    # a follower (tail -f): the newest lines first, then everything after the last seen
    batch, _ = log.lines(limit=4)
    seen = [s for s, _ in batch]
    log.append("".join(f"{i}\n" for i in range(11, 21)))
    while True:
        batch, last = log.lines(after=seen[-1], limit=4)
        if not batch:
            break
        seen += [s for s, _ in batch]
    assert seen == list(range(7, 21))
    assert last == 20


def test_rotation_bounds_the_disk(log_path: Path) -> None:
    log = PrintLog(log_path, max_bytes=1000)
    try:
        for i in range(2000):
            log.append(f"Time: {i}\n")
            assert log_path.stat().st_size <= 1000
        old = rotated_path(log_path)
        assert old.name == "7.log.1"
        assert old.stat().st_size <= 1000
        assert sorted(p.name for p in log_path.parent.iterdir()) == ["7.log", "7.log.1"]
        # whole lines in both generations, the newest at the end of the current file
        assert log_path.read_text().endswith("Time: 1999\n")
        assert old.read_text().endswith("\n")
        assert log.lines()[1] == 2000
    finally:
        log.close()


def test_reopen_appends_and_rotates_an_old_big_file(log_path: Path) -> None:
    log_path.parent.mkdir()
    log_path.write_text("old\n" * 300)  # 1200 bytes, over the limit
    log = PrintLog(log_path, max_bytes=1000)
    try:
        log.append("new\n")
        assert log_path.read_text() == "new\n"
        assert rotated_path(log_path).read_text() == "old\n" * 300
    finally:
        log.close()


def test_append_after_close_fails(log: PrintLog) -> None:
    log.close()
    log.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        log.append("late\n")


def test_close_writes_the_partial_line(log_path: Path) -> None:
    log = PrintLog(log_path)
    log.append("done\nlast words")
    log.close()
    assert log_path.read_text() == "done\nlast words\n"


def test_read_log_tail_from_files(log_path: Path) -> None:
    log = PrintLog(log_path, max_bytes=100)
    for i in range(1, 31):
        log.append(f"Time: {i}\n")  # 8-9 bytes a line: several rotations
    log.close()
    kept = rotated_path(log_path).read_text().splitlines() + log_path.read_text().splitlines()
    tail = read_log_tail(log_path, 5)
    assert [text for _, text in tail] == [f"Time: {i}" for i in range(26, 31)]
    assert [seq for seq, _ in tail] == list(range(len(kept) - 4, len(kept) + 1))
    whole = read_log_tail(log_path, 1000)
    assert [seq for seq, _ in whole] == list(range(1, len(kept) + 1))
    assert [text for _, text in whole] == kept


def test_file_lines_keep_the_ring_numbering_after_rotations(log_path: Path) -> None:
    log = PrintLog(log_path, ring=10_000, max_bytes=100)
    for i in range(1, 101):
        log.append(f"Time: {i}\n")  # about 12 rotations: the oldest lines left the files
    assert log.dropped > 0
    on_disk = read_log_tail(log_path, 10_000, 0, log.dropped)
    first = on_disk[0][0]
    assert first == log.dropped + 1
    ring, last = log.lines(first - 1, 10_000)
    assert on_disk == ring and on_disk[-1][0] == last == 100
    for after in (0, first - 5, first, 57, 99, 100):
        # lines gone from the files are skipped, as those gone from a ring are
        want = log.lines(max(after, first - 1) if after else 0, 7)[0]
        assert read_log_tail(log_path, 7, after, log.dropped) == want, after
    log.close()


def test_read_log_tail_edge_cases(tmp_path: Path) -> None:
    path = tmp_path / "9.log"
    assert read_log_tail(path, 10) == []
    path.write_bytes(b"a\nb\npartial")
    assert read_log_tail(path, 2) == [(2, "b"), (3, "partial")]
    assert read_log_tail(path, 0) == []
    path.write_bytes(b"\xffbad utf-8\n")
    assert read_log_tail(path, 5) == [(1, "\ufffdbad utf-8")]


def test_concurrent_appends_number_every_line_once(tmp_path: Path) -> None:
    log = PrintLog(tmp_path / "2.log", ring=10_000)
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(200):
            log.append(f"w{n} {i}\n")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines, last = log.lines(limit=10_000)
    log.close()
    assert last == 1600
    assert [s for s, _ in lines] == list(range(1, 1601))
    assert len({text for _, text in lines}) == 1600


@pytest.mark.daemon  # a FUSE filesystem process
def test_a_log_file_the_disk_will_not_create_waits_in_memory() -> None:
    """A set started just as its disk failed (EIO at create): its printer lines wait,
    and the file is made once the disk takes writes again (it raised, and the spawn
    failed with an internal error, its set left 'starting' in the history)."""
    from diskfaults import eio_fs

    with eio_fs() as disk:
        disk.fail("write")
        log = PrintLog(disk.path / "logs" / "8.log")
        try:
            log.append("Time: 1\nTime: 2\n")
            assert log.lines() == ([(1, "Time: 1"), (2, "Time: 2")], 2)
            assert log.unwritten > 0
            disk.heal()
            assert log.retry()
            assert (disk.path / "logs" / "8.log").read_text() == "Time: 1\nTime: 2\n"
        finally:
            log.close()
