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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

from labctl import figures, humane
from labctl.layout import ANSI, Column, cut, lay_out, visible
from labctl.render import set_columns
from labd.protocol import StatusRecord

Out = Callable[[str], None]
Record = Mapping[str, Any]

TTY_INTERVAL = 0.1
PLAIN_INTERVAL = 1.0
SPARK_EVERY = 2.0  # seconds between two points of the rate sparkline
SPARK_POINTS = 10
QUIT_KEYS = frozenset("qQ")
BLOCKS = " ▁▂▃▄▅▆▇█"
ASCII_BLOCKS = " .:-=+*#%@"
CLEAR_LINE, CLEAR_BELOW = "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


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
    live, total = s.get("processes_alive"), s.get("processes_total")
    if type(live) is not int or type(total) is not int or not total:
        return humane.MISSING
    return f"{live}/{total}"


def columns(sets: Sequence[Record], sparks: Sparks, blocks: str) -> list[Column]:
    """The status columns, then latency and processes alive (dropped first when the
    terminal is narrow) and the rate sparkline, blank for a set that stopped."""

    def rate(s: Record) -> str:
        return humane.rate(s.get("rate")) if figures.live(s) else humane.MISSING

    def spark(s: Record) -> str:
        return sparks.line(int(s.get("id") or 0), blocks) if figures.live(s) else ""

    cols = set_columns(sets)
    cols.append(Column("RATE", rate, right=True))
    if any(figures.messages(s) for s in sets):
        cols.append(
            Column("P50", lambda s: humane.micros(s.get("latency_p50_us")), right=True, drop=3)
        )
        cols.append(
            Column("P99", lambda s: humane.micros(s.get("latency_p99_us")), right=True, drop=3)
        )
    cols.append(Column("ALIVE", lambda s: alive(cast(StatusRecord, s)), right=True, drop=4))
    cols.append(Column(f"LAST {SPARK_POINTS * SPARK_EVERY:g} S", spark, drop=2))
    return cols


def frame(
    sets: Sequence[Record],
    sparks: Sparks,
    header: str,
    blocks: str = BLOCKS,
    width: int = figures.WIDTH,
) -> list[str]:
    """The picture as lines: a header, a blank line and the table, ``width`` wide."""
    if not sets:
        return [header, "", "no sets (start one with: spawn queue 3)"]
    return [header, "", *lay_out(columns(sets, sparks, blocks), sets, width - 1)]


def fit(lines: list[str], columns: int, rows: int) -> list[str]:
    """Cut the picture to the terminal, so that redrawing in place never scrolls."""
    width = max(1, columns - 1)
    shown = lines[: max(1, rows - 1)]
    return [line if visible(line) <= width else cut(_plain(line), width) for line in shown]


def _plain(line: str) -> str:
    return ANSI.sub("", line)


def where(address: object) -> str:
    """``local`` for a unix socket, else ``HOST:PORT``: short enough for any header."""
    text = str(address)
    return "local" if text.startswith("unix:") else text


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
                    f"{time.strftime('%H:%M:%S')}  labd {where(client.address)}"
                    f"  every {interval:g} s; q or Ctrl-C to stop; help figures explains"
                )
                width = shutil.get_terminal_size().columns if tty else figures.WIDTH
                lines = frame(sets, sparks, header, blocks, width)
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
    out("\n".join(_plain(line) for line in lines) + "\n\n")  # not a terminal: no colour
    return 0
