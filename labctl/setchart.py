"""``labctl plot ID``: a set's value, attempted and lost over time as a terminal chart;
the gap between the attempted and value curves is the lesson's race, drawn."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labctl import charts, humane

KEYS = ("attempted", "value", "lost")
TICKS = 6


def chart(data: Mapping[str, Any], width: int = charts.WIDTH) -> str:
    rows = data.get("samples", [])
    t0 = rows[0]["at"]
    span = rows[-1]["at"] - t0
    series = [
        charts.Series(key, [(r["at"] - t0, float(r.get(key) or 0)) for r in rows]) for key in KEYS
    ]
    ticks = [(span * i / (TICKS - 1), f"{span * i / (TICKS - 1):.0f}s") for i in range(TICKS)]
    last = rows[-1]
    title = (
        f"set {data['id']}: {data['mechanism']} x{data['counters']} ({data['state']}), "
        f"{len(rows)} samples"
    )
    out = charts.lines(title, series, ticks, ylog=False, width=width)
    summary = (
        f"last sample: attempted {humane.count(last.get('attempted'))}, value "
        f"{humane.count(last.get('value'))}, lost {humane.count(last.get('lost'))}"
    )
    return f"{out}\n{summary[:width]}"
