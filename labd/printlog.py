"""The printers' output of one set: numbered lines in a memory ring and a rotated file.

Raw output arrives in chunks (:meth:`PrintLog.append`); a partial last line waits for its
newline. Each complete line gets the next sequence number (1, 2, 3 ...), joins a ring of
the newest ``ring`` lines that ``tail`` serves, and is appended to the log file. A line
longer than :data:`MAX_LINE` characters is cut there. When the file would grow past
``max_bytes`` it is renamed to ``NAME.log.1`` (replacing the previous one) and a new file
begun, so one set's logs take at most about ``2 * max_bytes`` of disk.

Sets of earlier daemon runs have no ring: :func:`read_log_tail` reads their files.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from pathlib import Path
from typing import BinaryIO

MAX_LINE = 4096


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
        self._file: BinaryIO | None = _open_append(path)
        self._size = os.fstat(self._file.fileno()).st_size

    def append(self, text: str) -> None:
        """Take a chunk of raw output; number and keep each line it completes."""
        with self._lock:
            if self._file is None:
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

    def flush(self) -> None:
        """Keep the partial line as a complete one, and push the file to the OS."""
        with self._lock:
            if self._partial:
                self._keep([self._partial])
                self._partial = ""
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Flush, then close the file; later appends raise ValueError."""
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _keep(self, lines: list[str]) -> None:
        """Number, ring and write complete lines (lock held)."""
        if not lines or self._file is None:
            return
        chunk: list[bytes] = []
        pending = 0
        for raw in lines:
            line = raw.removesuffix("\r")[:MAX_LINE]
            self._seq += 1
            self._ring.append((self._seq, line))
            data = line.encode("utf-8", "replace") + b"\n"
            if self._size + pending + len(data) > self.max_bytes and self._size + pending > 0:
                self._write(chunk)
                chunk, pending = [], 0
                self._rotate()
            chunk.append(data)
            pending += len(data)
            self._lines[1] += 1
        self._write(chunk)
        assert self._file is not None
        self._file.flush()

    def _write(self, chunk: list[bytes]) -> None:
        assert self._file is not None
        data = b"".join(chunk)
        self._file.write(data)
        self._size += len(data)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        os.replace(self.path, rotated_path(self.path))
        self._file = _open_append(self.path)
        self._size = 0
        self.dropped += self._lines[0]
        self._lines = [self._lines[1], 0]


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


def _open_append(path: Path) -> BinaryIO:
    """Open ``path`` for appending, creating it (0600) and its directory (0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return os.fdopen(fd, "ab")
