"""The printers' output of one set: numbered lines in a memory ring and a rotated file.

Raw output arrives in chunks (:meth:`PrintLog.append`); a partial last line waits for its
newline. Each complete line gets the next sequence number (1, 2, 3 ...), joins a ring of
the newest ``ring`` lines that ``tail`` serves, and is appended to the log file. A line
longer than :data:`MAX_LINE` characters is cut there. When the file would grow past
``max_bytes`` it is renamed to ``NAME.log.1`` (replacing the previous one) and a new file
begun, so one set's logs take at most about ``2 * max_bytes`` of disk.

Sets of earlier daemon runs have no ring: :func:`read_log_tail` reads their files.

A write the disk refuses (full, I/O error) loses nothing, nor does a log file it will
not create: the lines wait in memory (at most ``max_bytes`` of them, the oldest dropped
first) and are written, in order, at the next line or :meth:`PrintLog.retry` once the
disk takes them again.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import deque
from pathlib import Path

MAX_LINE = 4096
log = logging.getLogger("labd.printlog")


def rotated_path(path: Path) -> Path:
    """Where the previous generation of a log file is kept."""
    return path.with_suffix(".log.1")


class PrintLog:
    """Numbered lines of one set's printers; thread-safe."""

    def __init__(self, path: Path, ring: int = 2000, max_bytes: int = 1 << 20) -> None:
        if ring < 1 or max_bytes < 1:
            raise ValueError("ring and max_bytes must be at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._ring: deque[tuple[int, str]] = deque(maxlen=ring)
        self._partial = ""
        self._seq = 0
        #: lines numbered but no longer in either file (rotated out twice): the file
        #: numbering of :func:`read_log_tail` plus this is the ring's numbering
        self.dropped = 0
        self._lines = [0, 0]  # lines in the rotated file, in the current one
        self._unwritten = bytearray()  # whole lines the disk did not take yet
        self._failing: str | None = None  # why, while it does not
        self._closed = False
        self._fd: int | None = None
        self._size = 0
        try:
            self._fd = _open_append(path)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:  # the file is made at the first write the disk takes
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            log.warning("printer log %s: %s: its lines wait in memory", path, exc)
            self._failing = exc.strerror or str(exc)

    def append(self, text: str) -> None:
        """Take a chunk of raw output; number and keep each line it completes."""
        with self._lock:
            if self._closed:
                raise ValueError(f"print log {self.path} is closed")
            parts = (self._partial + text).split("\n")
            self._partial = parts.pop()[:MAX_LINE]
            self._keep(parts)

    def lines(self, after: int = 0, limit: int = 100) -> tuple[list[tuple[int, str]], int]:
        """``(lines, last_seq)``: with ``after == 0`` the newest ``limit`` lines, else the
        first ``limit`` lines numbered above ``after``; ``last_seq`` is the newest line's
        number (0 before the first). Lines that left the ring are skipped silently."""
        with self._lock:
            if limit <= 0 or not self._ring:
                return [], self._seq
            if after <= 0:
                start = max(0, len(self._ring) - limit)
            else:
                start = max(0, after - self._ring[0][0] + 1)
            return list(itertools.islice(self._ring, start, start + limit)), self._seq

    @property
    def unwritten(self) -> int:
        """Bytes of lines the disk has not taken yet."""
        with self._lock:
            return len(self._unwritten)

    def flush(self) -> None:
        """Keep the partial line as a complete one, and write what waits."""
        with self._lock:
            if self._partial:
                self._keep([self._partial])
                self._partial = ""
            self._write_out()

    def close(self) -> None:
        """Flush; later appends raise ValueError. The file closes once every line is
        written (see :meth:`retry`)."""
        self.flush()
        with self._lock:
            self._closed = True
            self._close_if_done()

    def retry(self) -> bool:
        """Write what the disk refused before; True once nothing waits."""
        with self._lock:
            self._write_out()
            self._close_if_done()
            return not self._unwritten

    def _close_if_done(self) -> None:
        if self._closed and not self._unwritten and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _keep(self, lines: list[str]) -> None:
        """Number, ring and write complete lines (lock held)."""
        if not lines:
            return
        for raw in lines:
            line = raw.removesuffix("\r")[:MAX_LINE]
            self._seq += 1
            self._ring.append((self._seq, line))
            self._unwritten += line.encode("utf-8", "replace") + b"\n"
        excess = len(self._unwritten) - self.max_bytes
        if excess > 0:  # the disk refused for long: the oldest waiting lines go
            cut = self._unwritten.find(b"\n", excess - 1) + 1
            self.dropped += self._unwritten[:cut].count(b"\n")
            del self._unwritten[:cut]
        self._write_out()

    def _write_out(self) -> None:
        """Write the waiting lines, rotating at line boundaries; what the disk refuses
        waits for the next call (lock held)."""
        try:
            while self._unwritten:
                if self._fd is None:  # a rotation that failed half-way
                    self._fd = _open_append(self.path)
                    self._size = os.fstat(self._fd).st_size
                room = self.max_bytes - self._size
                cut = self._unwritten.rfind(b"\n", 0, max(room, 0)) + 1
                if cut == 0 and self._size > 0:
                    self._rotate()
                    continue
                if cut == 0:  # one line longer than the whole file: alone in it
                    cut = self._unwritten.find(b"\n") + 1
                n = os.write(self._fd, self._unwritten[:cut])
                self._lines[1] += self._unwritten[:n].count(b"\n")
                del self._unwritten[:n]
                self._size += n
        except OSError as exc:
            if self._failing is None:
                log.warning("printer log %s: %s: its lines wait in memory", self.path, exc)
            self._failing = exc.strerror or str(exc)
            return
        if self._failing is not None:
            log.warning("printer log %s: written again (the disk had refused it)", self.path)
            self._failing = None

    def _rotate(self) -> None:
        assert self._fd is not None
        os.replace(self.path, rotated_path(self.path))
        os.close(self._fd)
        self._fd = None
        self.dropped += self._lines[0]
        self._lines = [self._lines[1], 0]
        self._fd = _open_append(self.path)
        self._size = 0


def within_bytes(
    lines: list[tuple[int, str]], budget: int, *, newest: bool
) -> list[tuple[int, str]]:
    """As many of ``lines`` as fit in ``budget`` bytes of text (at least one): the
    newest ones with ``newest``, else the oldest, so that one answer holds little."""
    kept: list[tuple[int, str]] = []
    used = 0
    for item in reversed(lines) if newest else lines:
        used += len(item[1]) + 1
        if kept and used > budget:
            break
        kept.append(item)
    return kept[::-1] if newest else kept


def read_log_tail(
    path: Path, limit: int, after: int = 0, dropped: int = 0
) -> list[tuple[int, str]]:
    """Lines of a set's log files (``.log.1`` then the current one), numbered by their
    position in the two plus ``dropped`` (:attr:`PrintLog.dropped`, if known), for sets
    whose ring is gone: as :meth:`PrintLog.lines`, the last ``limit`` lines, or with
    ``after`` the first ``limit`` lines numbered above it."""
    if limit <= 0:
        return []
    data = b""
    for part in (rotated_path(path), path):
        try:
            data += part.read_bytes()
        except FileNotFoundError:
            continue
    if not data:
        return []
    body = data.removesuffix(b"\n")
    if after > 0:
        skip = max(0, after - dropped)
        chosen = body.split(b"\n")[skip : skip + limit]
        first = dropped + skip + 1
        return [(first + i, t.decode("utf-8", "replace")) for i, t in enumerate(chosen)]
    total = body.count(b"\n") + 1
    texts = [t.decode("utf-8", "replace") for t in body.rsplit(b"\n", limit)[-limit:]]
    first = dropped + total - len(texts) + 1
    return [(first + i, text) for i, text in enumerate(texts)]


def _open_append(path: Path) -> int:
    """Open ``path`` for appending, creating it (0600) and its directory (0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
