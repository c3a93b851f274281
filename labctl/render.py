"""Results of the daemon's API as text for people (``--json`` prints them as they came).

Every function takes the decoded JSON of one API call and returns the whole text, without
a trailing newline. Missing keys show as ``-``: a newer or older daemon still renders.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import click

from labctl import humane
from labctl.table import pairs, table
from labd.protocol import (
    LIVE_STATES,
    EventRecord,
    InspectRecord,
    MechanismRecord,
    ParamRecord,
    ProcessRecord,
    StatusRecord,
    typed_value,
)

STATE_COLOURS = {
    "starting": "cyan",
    "running": "green",
    "degraded": "yellow",
    "stopping": "cyan",
    "failed": "red",
    "interrupted": "red",
}
STATUS_HEADERS = (
    "ID",
    "NAME",
    "MECHANISM",
    "STATE",
    "COUNTERS",
    "VALUE",
    "ATTEMPTED",
    "LOST",
    "LOST%",
    "RATE",
)
NAME_WIDTH = 24


def styled_state(state: str, padded: str | None = None) -> str:
    colour = STATE_COLOURS.get(state)
    text = state if padded is None else padded
    return click.style(text, fg=colour) if colour else text


def _text(value: Any) -> str:
    if value is None or value == "":
        return humane.MISSING
    if type(value) is bool:
        return "yes" if value else "no"
    return str(value)


def _short(name: Any) -> str:
    text = _text(name)
    return text if len(text) <= NAME_WIDTH else text[: NAME_WIDTH - 3] + "..."


def status_row(s: StatusRecord) -> list[str]:
    return [
        _text(s.get("id")),
        _short(s.get("name")),
        _text(s.get("mechanism")),
        _text(s.get("state")),
        _text(s.get("counters")),
        humane.count(s.get("value")),
        humane.count(s.get("attempted")),
        humane.count(s.get("lost")),
        humane.percent(s.get("lost"), s.get("attempted")),
        humane.rate(s.get("rate")) if s.get("state") in LIVE_STATES else humane.MISSING,
    ]


def status_table(sets: Sequence[StatusRecord]) -> str:
    """One row per set: id, name, mechanism, state, counters, value, attempted, lost, rate."""
    if not sets:
        return "no sets (start one with: labctl spawn queue 3)"

    def style(column: int, cell: str, padded: str) -> str:
        return styled_state(cell, padded) if column == 3 else padded

    rows = [status_row(s) for s in sets]
    return "\n".join(table(STATUS_HEADERS, rows, right={0, 4, 5, 6, 7, 8, 9}, style=style))


def param_line(p: ParamRecord) -> list[str]:
    """``key=default``, type, and help followed by the allowed values or range."""
    allowed = ""
    if p.get("choices") is not None:
        allowed = " [" + "|".join(typed_value(c) for c in p["choices"]) + "]"
    elif p.get("min") is not None or p.get("max") is not None:
        allowed = f" [{_bound(p.get('min'))}..{_bound(p.get('max'))}]"
    kind = _text(p.get("type")) + (" or none" if p.get("nullable") else "")
    return [
        f"{p.get('name')}={typed_value(p.get('default'))}",
        kind,
        _text(p.get("help")) + allowed,
    ]


def _bound(value: Any) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def common_params(mechs: Sequence[MechanismRecord]) -> list[ParamRecord]:
    """Parameters every loaded mechanism declares identically (shown once)."""
    loaded = [m for m in mechs if not m.get("error")]
    if len(loaded) < 2:
        return []
    first = loaded[0].get("params") or []
    return [p for p in first if all(p in (m.get("params") or []) for m in loaded[1:])]


def _mechanism_title(m: MechanismRecord) -> list[str]:
    tags = [_text(m.get("source"))] + (["messages"] if m.get("messages") else [])
    name = click.style(_text(m.get("name")), bold=True)
    lines = [f"{name}  {_text(m.get('summary'))}  ({', '.join(tags)})"]
    if m.get("error"):
        lines.append(click.style(f"  failed to load: {m['error']}", fg="red"))
    return lines


def mechanisms(mechs: Sequence[MechanismRecord]) -> str:
    """Each mechanism with its own parameters, then the common ones, columns aligned."""
    if not mechs:
        return "no mechanisms installed (is ipclab installed in this environment?)"
    common = common_params(mechs)
    sections = [
        (_mechanism_title(m), [param_line(p) for p in m.get("params") or () if p not in common])
        for m in mechs
    ]
    if common:
        title = "common parameters, for every mechanism (KEY=DEFAULT  TYPE  HELP [ALLOWED])"
        sections.append(([title], [param_line(p) for p in common]))
    lines = iter(table(("", "", ""), [r for _, rows in sections for r in rows], indent="  ")[1:])
    return "\n\n".join("\n".join(title + [next(lines) for _ in rows]) for title, rows in sections)


def _title(s: StatusRecord) -> str:
    name = f' "{s["name"]}"' if s.get("name") else ""
    return f"set {_text(s.get('id'))}{name}: {_text(s.get('mechanism'))}, " + styled_state(
        _text(s.get("state"))
    )


def _times(s: StatusRecord) -> list[tuple[str, str]]:
    started, stopped = s.get("started_at"), s.get("stopped_at")
    ran = None
    if isinstance(started, int | float):
        end = stopped if isinstance(stopped, int | float) else time.time()
        ran = end - started
    return [
        ("counters", _text(s.get("counters"))),
        ("printers", _text(s.get("printers"))),
        ("started", humane.clock(started)),
        ("stopped", humane.clock(stopped)),
        ("ran for", humane.duration(ran)),
    ]


def _metrics(s: InspectRecord) -> list[tuple[str, str]]:
    lost = humane.exact(s.get("lost"))
    if s.get("attempted"):
        lost += f" ({humane.percent(s.get('lost'), s.get('attempted'))})"
    items = [
        ("value", humane.exact(s.get("value"))),
        ("attempted", humane.exact(s.get("attempted"))),
        ("lost", lost),
        ("in flight", humane.exact(s.get("in_flight"))),
        ("corrupt", humane.exact(s.get("corrupt"))),
        ("rate", humane.rate(s.get("rate"))),
    ]
    per_counter = s.get("per_counter")
    if isinstance(per_counter, list) and per_counter:
        items.append(("per counter", " ".join(humane.exact(n) for n in per_counter)))
    if s.get("latency_p50_us") is not None or s.get("latency_p99_us") is not None:
        items.append(("latency p50", humane.micros(s.get("latency_p50_us"))))
        items.append(("latency p99", humane.micros(s.get("latency_p99_us"))))
    return items


def processes(procs: Sequence[ProcessRecord]) -> list[str]:
    rows = [
        [
            _text(p.get("role")),
            _text(p.get("index")),
            _text(p.get("pid")),
            _text(p.get("alive")),
            _text(p.get("exitcode")),
            humane.MISSING if p.get("cpu_percent") is None else f"{p['cpu_percent']:.1f}",
            humane.size(p.get("rss")),
        ]
        for p in procs
    ]
    headers = ("ROLE", "INDEX", "PID", "ALIVE", "EXIT", "CPU%", "RSS")
    return table(headers, rows, right={1, 2, 4, 5, 6}, indent="  ")


def events(evs: Sequence[EventRecord]) -> list[str]:
    rows = [
        [humane.clock(e.get("at"), millis=True), _text(e.get("state")), _text(e.get("detail"))]
        for e in evs
    ]
    return table(("AT", "STATE", "DETAIL"), rows, indent="  ")


def inspect(s: InspectRecord) -> str:
    """A set in full: times, parameters, metrics, processes, error, events."""
    lines = [_title(s), *pairs(_times(s))]
    params = s.get("params") or {}
    if params:
        lines += ["", "parameters", *pairs([(k, typed_value(v)) for k, v in params.items()])]
    lines += ["", "metrics", *pairs(_metrics(s))]
    if s.get("processes"):
        lines += ["", "processes", *processes(s["processes"])]
    if s.get("error"):
        lines += ["", click.style(f"error: {s['error']}", fg="red")]
    if s.get("events"):
        lines += ["", "events", *events(s["events"])]
    return "\n".join(lines)


def stopped(sets: Sequence[StatusRecord]) -> str:
    """One line per set that was stopped, with its final metrics."""
    if not sets:
        return "no sets to stop"
    return "\n".join(stopped_line(s) for s in sets)


def stopped_line(s: StatusRecord) -> str:
    state = styled_state(_text(s.get("state")))
    lost, attempted = s.get("lost"), s.get("attempted")
    return (
        f"set {_text(s.get('id'))} ({_text(s.get('mechanism'))}) {state}:"
        f" value {humane.exact(s.get('value'))}, attempted {humane.exact(attempted)},"
        f" lost {humane.exact(lost)} ({humane.percent(lost, attempted)})"
    )


def tail_lines(lines: Sequence[tuple[int, str]]) -> str:
    """The printers' lines as they were printed (each is ``[seq, text]``)."""
    return "\n".join(str(text) for _seq, text in lines)
