"""``tail -f``: the printers' new lines (the live table is :mod:`labctl.watch`).

It polls a small snapshot on the command's own connection, never a callback, and ends
quietly on Ctrl-C, which in the REPL cancels the view and not the REPL. ``sleep`` and
``out`` are parameters so tests drive them without a terminal or a clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from labctl import render
from labctl.client import Client
from labd.protocol import LIVE_STATES, TailRecord

Out = Callable[[str], None]
Sleep = Callable[[float], None]

TAIL_INTERVAL = 0.2
TAIL_PAGE = 1000


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
            got = answer.get("lines") or ()
            # more is waiting: a full page, or one labd cut short (TAIL_MAX_BYTES)
            full = len(got) >= TAIL_PAGE or (bool(got) and int(answer.get("last") or 0) > last)
    except KeyboardInterrupt:
        pass


def _print_new(answer: TailRecord, last: int, out: Out, *, show: bool = True) -> int:
    """Print an answer's lines; return the sequence number to continue after."""
    got = answer.get("lines") or []
    if got and show:
        out(render.tail_lines(got) + "\n")
    if got:
        return int(got[-1][0])
    return max(last, int(answer.get("last") or 0))
