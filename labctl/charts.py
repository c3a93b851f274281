"""Terminal charts in plain text, at most 80 columns: bars of one value per item, and
lines of several series against a shared x axis.

Drawn by hand rather than with a plotting library: the charts are small, the output
must fit 80 columns exactly and be the same in a pipe as in a terminal, and the one
terminal plotting library tried (plotext 6.1) drew horizontal bars wrongly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from labctl import humane

WIDTH = 80
BAR = "█"
PARTIAL = " ▏▎▍▌▋▊▉"
MARKERS = "*o+x#@%&"
DECADES_FOR_LOG = 2.0  # log scale when the values span this many decades or more


def spans_decades(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0]
    if len(positive) < 2:
        return False
    return math.log10(max(positive) / min(positive)) >= DECADES_FOR_LOG


def _scale(values: Sequence[float], log: bool) -> Callable[[float], float]:
    """A map of values to 0..1."""
    positive = [v for v in values if v > 0] or [1.0]
    top = max(positive)
    if not log:
        return lambda v: max(0.0, v) / top if top else 0.0
    floor = 10 ** math.floor(math.log10(min(positive)))
    span = math.log10(top / floor) or 1.0
    return lambda v: math.log10(v / floor) / span if v > 0 else 0.0


def _bar(fraction: float, width: int) -> str:
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = BAR * full + (PARTIAL[part] if part else "")
    return text or "▏"


def bars(
    title: str,
    items: Sequence[tuple[str, float, str]],
    *,
    side_title: str = "",
    width: int = WIDTH,
) -> str:
    """One bar per (label, value, side text); log scale when the values span decades."""
    values = [v for _, v, _ in items]
    log = spans_decades(values)
    scale = _scale(values, log)
    label_w = min(20, max((len(lbl) for lbl, _, _ in items), default=1))
    side_w = max([len(side_title)] + [len(s) for _, _, s in items])
    bar_w = width - label_w - side_w - 11
    head = f"{title}{' (log scale)' if log else ''}"
    lines = [head.ljust(width - side_w - 1) + " " + side_title.rjust(side_w)]
    for label, value, side in items:
        shown = label if len(label) <= label_w else label[: label_w - 1] + "…"
        bar = _bar(scale(value), bar_w)
        text = f"{shown.ljust(label_w)} {bar} {humane.number(value)}"
        lines.append(
            text.ljust(width - side_w - 1)[: width - side_w - 1] + " " + side.rjust(side_w)
        )
    return "\n".join(line.rstrip() for line in lines)


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]  # (x, y)


def lines(
    title: str,
    series: Sequence[Series],
    xticks: Sequence[tuple[float, str]],
    *,
    height: int = 12,
    width: int = WIDTH,
    ylog: bool | None = None,
    yfmt: Callable[[float], str] = humane.number,
) -> str:
    """Series as markers joined by dots on a character grid, y axis on the left."""
    ys = [y for s in series for _, y in s.points]
    xs = [x for s in series for x, _ in s.points] + [x for x, _ in xticks]
    log = spans_decades(ys) if ylog is None else ylog
    ytop = max(ys, default=1.0) or 1.0
    ybottom = 0.0 if not log else 10 ** math.floor(math.log10(min(y for y in ys if y > 0)))
    yscale = _scale([ybottom or 1e-300, ytop], log) if log else (lambda v: v / ytop)
    left, right = min(xs, default=0.0), max(xs, default=1.0)
    axis_w = 9
    plot_w = width - axis_w - 2

    def col(x: float) -> int:
        return round((x - left) / (right - left) * (plot_w - 1)) if right > left else 0

    def row(y: float) -> int:
        return height - 1 - round(max(0.0, min(1.0, yscale(y))) * (height - 1))

    grid = _draw(series, col, row, height, plot_w)
    out = [title + (" (log scale)" if log else "")]
    for r in range(height):
        label = ""
        if r in (0, height // 2, height - 1):
            frac = (height - 1 - r) / (height - 1)
            value = ybottom * (ytop / ybottom) ** frac if log and ybottom else ytop * frac
            label = yfmt(value)
        out.append(f"{label:>{axis_w}}┤{''.join(grid[r])}".rstrip())
    out.append(" " * axis_w + "└" + "─" * plot_w)
    out.append(_xlabels(xticks, col, axis_w + 1, width))
    legend = "  ".join(f"{MARKERS[k % len(MARKERS)]} {s.name}" for k, s in enumerate(series))
    out += _wrap(legend, width)
    return "\n".join(line.rstrip() for line in out)


def _draw(
    series: Sequence[Series],
    col: Callable[[float], int],
    row: Callable[[float], int],
    height: int,
    width: int,
) -> list[list[str]]:
    """The plot area: each series' points as its marker, joined by dots."""
    grid = [[" "] * width for _ in range(height)]
    for k, s in enumerate(series):
        mark = MARKERS[k % len(MARKERS)]
        pts = sorted(s.points)
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            c0, c1, r0, r1 = col(x0), col(x1), row(y0), row(y1)
            for c in range(c0 + 1, c1):
                r = round(r0 + (r1 - r0) * (c - c0) / (c1 - c0))
                if grid[r][c] == " ":
                    grid[r][c] = "·"
        for x, y in pts:
            grid[row(y)][col(x)] = mark
    return grid


def _xlabels(
    xticks: Sequence[tuple[float, str]], col: Callable[[float], int], offset: int, width: int
) -> str:
    line = [" "] * width
    for x, text in xticks:
        start = max(0, min(width - len(text), offset + col(x) - len(text) // 2))
        if all(c == " " for c in line[max(0, start - 1) : start + len(text) + 1]):
            line[start : start + len(text)] = text
    return "".join(line)


def _wrap(text: str, width: int) -> list[str]:
    out, current = [], ""
    for word in text.split("  "):
        if current and len(current) + 2 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current}  {word}" if current else word
    return [*out, current] if current else out
