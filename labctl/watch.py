"""The live ``watch`` view: a table of the sets' figures redrawn in place until Ctrl-C or ``q``.

Used by the ``watch`` command, hence by the one-shot CLI and the REPL alike. It polls
``status()`` on the command's client (a snapshot, never a callback), 10 times a second
on a terminal, and draws below the cursor without clearing the screen, so the last
picture stays in the scrollback when the view ends. When stdout is not a terminal it
prints one table a second instead. Standard library only: no prompt_toolkit here.
"""

from __future__ import annotations

import os
import select
import shutil
import sys
import termios
import time
import tty
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from labctl import humane
from labctl.table import table
from labd.protocol import LIVE_STATES, StatusRecord

Out = Callable[[str], None]

TTY_INTERVAL = 0.1
PLAIN_INTERVAL = 1.0
SPARK_EVERY = 1.0  # seconds between two points of the rate sparkline
SPARK_POINTS = 20
QUIT_KEYS = frozenset("qQ")
BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII_BLOCKS = " .:-=+*#%@"
CLEAR_LINE, CLEAR_BELOW = "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
HEADERS = (
    "ID",
    "MECHANISM",
    "STATE",
    "VALUE",
    "ATTEMPTED",
    "LOST",
    "IN FLIGHT",
    "RATE",
    "P50",
    "P99",
    "ALIVE",
    "RATE, LAST 20 S",
)


class StatusSource(Protocol):
    """What the view needs of a client (a fake in tests)."""

    @property
    def address(self) -> object: ...

    def status(self, ids: Sequence[int] = ()) -> list[StatusRecord]: ...


class Sparks:
    """A short history of each set's rate, one point per ``SPARK_EVERY`` seconds."""

    def __init__(self, points: int = SPARK_POINTS, every: float = SPARK_EVERY) -> None:
        self._points = points
        self._every = every
        self._last: float | None = None
        self._series: dict[int, deque[float]] = {}

    def add(self, sets: Sequence[StatusRecord], now: float) -> None:
        if self._last is not None and now - self._last < self._every:
            return
        self._last = now
        for s in sets:
            series = self._series.setdefault(s.get("id"), deque(maxlen=self._points))
            series.append(float(s.get("rate") or 0.0))

    def line(self, set_id: int, blocks: str = BLOCKS) -> str:
        return sparkline(self._series.get(set_id, ()), blocks)


def sparkline(values: Sequence[float] | deque[float], blocks: str = BLOCKS) -> str:
    """One character per value, scaled to the largest one (all blank when all are zero)."""
    top = max(values, default=0.0)
    if top <= 0:
        return blocks[0] * len(values)
    last = len(blocks) - 1
    return "".join(blocks[min(last, max(0, round(v / top * last)))] for v in values)


def alive(s: StatusRecord) -> str:
    procs = s.get("processes")
    if not isinstance(procs, list) or not procs:
        return humane.MISSING
    return f"{sum(1 for p in procs if p.get('alive'))}/{len(procs)}"


def row(s: StatusRecord, spark: str) -> list[str]:
    live = s.get("state") in LIVE_STATES
    return [
        str(s.get("id", humane.MISSING)),
        str(s.get("mechanism") or humane.MISSING),
        str(s.get("state") or humane.MISSING),
        humane.count(s.get("value")),
        humane.count(s.get("attempted")),
        humane.count(s.get("lost")),
        humane.count(s.get("in_flight")),
        humane.rate(s.get("rate")) if live else humane.MISSING,
        humane.micros(s.get("latency_p50_us")),
        humane.micros(s.get("latency_p99_us")),
        alive(s),
        spark,
    ]


def frame(
    sets: Sequence[StatusRecord], sparks: Sparks, header: str, blocks: str = BLOCKS
) -> list[str]:
    """The picture as lines: a header, a blank line and the table."""
    if not sets:
        return [header, "", "no sets (start one with: spawn queue 3)"]
    rows = [row(s, sparks.line(s.get("id"), blocks)) for s in sets]
    return [header, "", *table(HEADERS, rows, right=set(range(3, 11)) | {0})]


def fit(lines: list[str], columns: int, rows: int) -> list[str]:
    """Cut the picture to the terminal, so that redrawing in place never scrolls."""
    return [line[: max(1, columns - 1)] for line in lines[: max(1, rows - 1)]]


class Keys:
    """Keys typed while the view runs, read without echo (``cbreak``: Ctrl-C still works)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def wait(self, timeout: float) -> str:
        """What was typed within ``timeout`` seconds ("" if nothing)."""
        if self._fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([self._fd], [], [], timeout)
        return os.read(self._fd, 64).decode(errors="ignore") if ready else ""


@contextmanager
def keyboard(enabled: bool) -> Iterator[Keys]:
    """Read stdin key by key (if it is a terminal) and restore its mode afterwards."""
    fd = sys.stdin.fileno() if enabled and sys.stdin.isatty() else None
    if fd is None:
        yield Keys(None)
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield Keys(fd)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def blocks_for(encoding: str | None) -> str:
    return BLOCKS if (encoding or "").lower().replace("-", "") == "utf8" else ASCII_BLOCKS


def watch_live(
    client: StatusSource, ids: Sequence[int], *, out: Out, tty: bool, keys: Keys | None = None
) -> None:
    """Redraw the view in place on a terminal (10 a second), else print one table a second.

    Ends on Ctrl-C or ``q``; ``keys`` is for tests (default: the terminal's stdin).
    """
    interval = TTY_INTERVAL if tty else PLAIN_INTERVAL
    with keyboard(tty and keys is None) as typed:
        reader = keys or typed
        drawn = 0
        try:
            if tty:
                out(HIDE_CURSOR)
            sparks, blocks = Sparks(), blocks_for(sys.stdout.encoding if tty else "ascii")
            while True:
                due = time.monotonic() + interval
                sets = client.status(ids)
                sparks.add(sets, time.monotonic())
                header = (
                    f"labd at {client.address}  {time.strftime('%H:%M:%S')}  "
                    f"every {interval:g} s; q or Ctrl-C to stop"
                )
                lines = frame(sets, sparks, header, blocks)
                drawn = _draw(out, lines, drawn) if tty else _print(out, lines)
                if QUIT_KEYS & set(reader.wait(max(0.0, due - time.monotonic()))):
                    return
        except KeyboardInterrupt:
            pass
        finally:
            if tty:
                out(SHOW_CURSOR)


def _draw(out: Out, lines: list[str], drawn: int) -> int:
    """Draw over the previous picture (``drawn`` lines above the cursor); return the count."""
    size = shutil.get_terminal_size()
    shown = fit(lines, size.columns, size.lines)
    up = f"\r\x1b[{drawn}A" if drawn else "\r"
    out(up + "".join(line + CLEAR_LINE + "\n" for line in shown) + CLEAR_BELOW)
    return len(shown)


def _print(out: Out, lines: list[str]) -> int:
    out("\n".join(lines) + "\n\n")
    return 0
