"""Tables that fit a width: columns declared once, text columns cut, optional ones dropped.

``status`` and ``watch`` declare their columns as :class:`Column` and call :func:`lay_out`
with the width to fit (80 when the output is not a terminal). When the table is too wide,
optional columns go first (highest ``drop`` first), then the columns close up to one
space apart and the text columns marked ``squeeze`` are cut (``..`` at the end), never
below ``SQUEEZE_MIN`` characters. Cells are
padded first and coloured after (``paint``), so colour never disturbs the alignment.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labctl.table import GAP

Record = Mapping[str, Any]
Paint = Callable[[Record, str, str], str]  # (record, raw cell, padded cell) -> shown
SQUEEZE_MIN = 10
READABLE = 30  # optional columns are dropped before a text column is cut below this
CUT = ".."
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Record], str]
    right: bool = False
    squeeze: bool = False  # text that may be cut to fit
    drop: int = 0  # > 0: dropped when the table is too wide, the highest first
    readable: int = READABLE  # squeezed text: optional columns go before it is cut below
    paint: Paint | None = None


def visible(text: str) -> int:
    """The width of ``text`` on a terminal (escape sequences take none)."""
    return len(ANSI.sub("", text))


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - len(CUT))] + CUT


def _widths(cols: Sequence[Column], cells: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c.header), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]


def _fits(widths: Sequence[int], width: int, gap: str = GAP) -> bool:
    return sum(widths) + len(gap) * (len(widths) - 1) <= width


def _readable(cols: Sequence[Column], widths: Sequence[int]) -> list[int]:
    return [min(w, c.readable) if c.squeeze else w for c, w in zip(cols, widths, strict=True)]


def lay_out(columns: Sequence[Column], records: Sequence[Record], width: int) -> list[str]:
    """Header and rows, at most ``width`` characters wide where the columns allow it."""
    cols = list(columns)
    cells = [[c.cell(r) for c in cols] for r in records]
    droppable = sorted((c for c in cols if c.drop), key=lambda c: -c.drop)
    while droppable and not _fits(_readable(cols, _widths(cols, cells)), width):
        gone = cols.index(droppable.pop(0))
        del cols[gone]
        for row in cells:
            del row[gone]
    widths = _widths(cols, cells)
    gap = GAP if _fits(widths, width) else " "  # cutting text: columns closer first
    excess = sum(widths) + len(gap) * (len(widths) - 1) - width
    for i in sorted(range(len(cols)), key=lambda i: cols[i].readable):
        if excess <= 0 or not cols[i].squeeze:
            continue
        floor = max(min(SQUEEZE_MIN, cols[i].readable), len(cols[i].header))
        take = min(excess, max(0, widths[i] - floor))
        widths[i] -= take
        excess -= take
    return [_line(cols, widths, None, [c.header for c in cols], gap)] + [
        _line(cols, widths, r, row, gap) for r, row in zip(records, cells, strict=True)
    ]


def _line(
    cols: Sequence[Column],
    widths: Sequence[int],
    record: Record | None,
    row: Sequence[str],
    gap: str = GAP,
) -> str:
    shown = []
    for c, w, raw in zip(cols, widths, row, strict=True):
        text = cut(raw, w)
        padded = text.rjust(w) if c.right else text.ljust(w)
        shown.append(c.paint(record, raw, padded) if record is not None and c.paint else padded)
    return gap.join(shown).rstrip()
