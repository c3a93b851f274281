"""``labctl explain ID``: a set's story as text, with a few collisions drawn as a timeline,
one lane per counter (R: it read, =: it held the value, W: it wrote).

The record comes whole from labd (rpyc ``explain(set_id)``, see ``labd/explain.py``);
``--json`` prints it as it came.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from labctl import figures, humane

Record = Mapping[str, Any]
SHOWN = 3  # collisions drawn
LANE = 44  # characters of a lane's time axis
WIDTH = 78


def _us(x: float) -> str:
    if x >= 1000:
        return f"{x / 1000:,.1f} ms"
    return f"{x:,.1f} us"


def _names(counters: Sequence[int]) -> str:
    names = [str(c) for c in counters]
    if len(names) == 1:
        return f"counter {names[0]}"
    return "counters " + ", ".join(names[:-1]) + " and " + names[-1]


def sentence(c: Record) -> str:
    """``counters 2 and 7 both read 41 within 7.0 us; both wrote 42; 1 increment lost.``"""
    rows = list(c.get("counters") or ())
    who = [int(x["counter"]) for x in rows]
    both = "both" if len(who) == 2 else "all"
    lost = int(c.get("lost") or 0)
    s = "s" if lost != 1 else ""
    if len(rows) == 1:
        held = float(rows[0]["wrote_at_us"]) - float(rows[0]["read_at_us"])
        return (
            f"counter {who[0]} read {c.get('value_read'):,} and wrote {c.get('wrote'):,} "
            f"{_us(held)} later, over {lost:,} increment{s} the others wrote meanwhile."
        )
    return (
        f"{_names(who)} {both} read {c.get('value_read'):,} within "
        f"{_us(float(c.get('read_within_us') or 0))}; {both} wrote {c.get('wrote'):,}; "
        f"{lost:,} increment{s} lost."
    )


def lanes(c: Record) -> list[str]:
    """The collision on a time axis, one lane per counter."""
    rows = list(c.get("counters") or ())
    end = max((float(r["wrote_at_us"]) for r in rows), default=0.0) or 1.0
    scale = (LANE - 1) / end
    out = [f"    {'':>10} 0{_us(end).rjust(LANE - 1)}"]
    for r in rows:
        a = round(float(r["read_at_us"]) * scale)
        b = max(a + 1, round(float(r["wrote_at_us"]) * scale))
        lane = " " * a + "R" + "=" * (b - a - 1) + "W"
        note = f"{c.get('value_read')}->{c.get('wrote')}"
        if r.get("wiped"):
            note += f", over {', '.join(str(o) for o in r.get('over') or ())}"
        line = f"    counter {str(r['counter']).rjust(2)} {lane.ljust(LANE)} {note}"
        out.append(line if len(line) <= WIDTH else line[: WIDTH - 2] + "..")
    return out


def _trace_lines(t: Record) -> list[str]:
    window = "the whole run" if t.get("whole_run") else f"the last {_us(t['seconds'] * 1e6)}"
    head = (
        f"The trace ({window}, up to {t.get('depth')} increments per counter) holds "
        f"{humane.exact(t.get('increments'))} increments and "
        f"{humane.exact(t.get('lost'))} lost updates, in "
        f"{humane.exact(t.get('collisions_total'))} collisions "
        "(R: a counter read, W: it wrote):"
    )
    lines = ["", *textwrap.wrap(head, WIDTH)]
    found = list(t.get("collisions") or ())
    for c in found[:SHOWN]:
        lines += ["", *textwrap.wrap(sentence(c), WIDTH, initial_indent="  ",
                                     subsequent_indent="  "), *lanes(c)]  # fmt: skip
    if int(t.get("collisions_total") or 0) > SHOWN:
        lines.append(f"  ... {int(t.get('collisions_total') or 0) - SHOWN} more (--json)")
    lines += ["", *textwrap.wrap(f"({t.get('cost')}.)", WIDTH)]
    return lines


def render(e: Record) -> str:
    title = f"set {e.get('id')}: {figures.variant(e)}, {e.get('state')}"
    lines = [title, ""]
    for paragraph in e.get("story") or ():
        lines += textwrap.wrap(str(paragraph), WIDTH)
    if e.get("trace"):
        lines += _trace_lines(e["trace"])
    return "\n".join(lines)
