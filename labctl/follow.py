"""The live views: ``watch`` (the status table, redrawn) and ``tail -f`` (new lines).

Both poll a small snapshot on the command's own connection, never a callback, and end
quietly on Ctrl-C, which in the REPL cancels the view and not the REPL. ``sleep`` and
``out`` are parameters so tests drive them without a terminal or a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from labctl import render
from labctl.client import Client
from labd.protocol import LIVE_STATES

Out = Callable[[str], None]
Sleep = Callable[[float], None]

WATCH_TTY_INTERVAL = 0.1
WATCH_PLAIN_INTERVAL = 1.0
TAIL_INTERVAL = 0.2
TAIL_PAGE = 1000

HOME, CLEAR_SCREEN, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[2J", "\x1b[K", "\x1b[J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def watch_frame(client: Client, ids: Sequence[int], interval: float) -> str:
    """One picture: a header line and the status table."""
    now = time.strftime("%H:%M:%S")
    header = f"labd at {client.address}  {now}  every {interval:g} s, Ctrl-C to stop"
    return header + "\n\n" + render.status_table(client.status(ids))


def watch(
    client: Client, ids: Sequence[int], *, out: Out, tty: bool, sleep: Sleep = time.sleep
) -> None:
    """Redraw the status table in place on a terminal (10 a second), else print one a second."""
    interval = WATCH_TTY_INTERVAL if tty else WATCH_PLAIN_INTERVAL
    if tty:
        out(HIDE_CURSOR + CLEAR_SCREEN)
    try:
        while True:
            due = time.monotonic() + interval
            frame = watch_frame(client, ids, interval)
            if tty:
                lines = frame.split("\n")
                out(HOME + "".join(line + CLEAR_LINE + "\n" for line in lines) + CLEAR_BELOW)
            else:
                out(frame + "\n\n")
            sleep(max(0.0, due - time.monotonic()))
    except KeyboardInterrupt:
        pass
    finally:
        if tty:
            out(SHOW_CURSOR)


def tail(
    client: Client,
    set_id: int,
    lines: int,
    *,
    follow: bool,
    out: Out,
    sleep: Sleep = time.sleep,
) -> None:
    """Print the last ``lines`` lines; with ``follow``, then new ones while the set is live."""
    first = client.tail(set_id, 0, max(lines, 1))
    last = _print_new(first, 0, out, show=lines > 0)
    state = first.get("state")
    if not follow:
        return
    try:
        full = False
        while state in LIVE_STATES or full:
            if not full:
                sleep(TAIL_INTERVAL)
            answer = client.tail(set_id, last, TAIL_PAGE)
            last = _print_new(answer, last, out)
            state = answer.get("state")
            full = len(answer.get("lines") or ()) >= TAIL_PAGE
    except KeyboardInterrupt:
        pass


def _print_new(answer: dict[str, Any], last: int, out: Out, *, show: bool = True) -> int:
    """Print an answer's lines; return the sequence number to continue after."""
    got = answer.get("lines") or []
    if got and show:
        out(render.tail_lines(got) + "\n")
    if got:
        return int(got[-1][0])
    return max(last, int(answer.get("last") or 0))
