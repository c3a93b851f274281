"""Results of the daemon's API as text for people (``--json`` prints them as they came).

Every function takes the decoded JSON of one API call and returns the whole text, without
a trailing newline. Missing keys show as ``-``: a newer or older daemon still renders.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from labctl import figures, humane
from labctl.layout import Column, lay_out
from labctl.table import pairs, table
from labd.protocol import (
    EventRecord,
    InspectRecord,
    MechanismRecord,
    ParamRecord,
    ProcessRecord,
    StatusRecord,
    VersionRecord,
    typed_value,
)

Record = Mapping[str, Any]

LINE_WIDTH = 80  # what a stopped line may take before its figures wrap to a line of their own

STATE_COLOURS = {
    "starting": "cyan",
    "running": "green",
    "degraded": "yellow",
    "stopping": "cyan",
    "failed": "red",
    "interrupted": "red",
}


def styled_state(state: str, padded: str | None = None) -> str:
    colour = STATE_COLOURS.get(state)
    text = state if padded is None else padded
    return figures.paint(text, fg=colour) if colour else text


def _text(value: Any) -> str:
    if value is None or value == "":
        return humane.MISSING
    if type(value) is bool:
        return "yes" if value else "no"
    return str(value)


def group_part(s: Record) -> bool:
    """A part of a group (spawn --on): its value is the group's shared one, so its own
    lost means nothing alone (see the group: labctl status GROUP)."""
    return bool((s.get("params") or {}).get("group"))


def _lost(s: Record) -> str:
    return humane.MISSING if group_part(s) else humane.count(s.get("lost"))


def _lost_pc(s: Record) -> str:
    return humane.MISSING if group_part(s) else humane.percent(s.get("lost"), s.get("attempted"))


def _lost_cell(s: Record, raw: str, padded: str) -> str:
    return figures.paint_lost(s.get("lost"), padded)


def _state_cell(s: Record, raw: str, padded: str) -> str:
    return styled_state(raw, padded)


def _rate(s: Record) -> str:
    return humane.rate(s.get("rate")) if figures.live(s) else humane.MISSING


def set_columns(sets: Sequence[Record]) -> list[Column]:
    """The columns status and watch share; IN FLIGHT and CORRUPT where they apply."""
    cols = [
        Column("ID", lambda s: _text(s.get("id")), right=True),
        Column("SET", figures.set_cell, squeeze=True),
        Column("STATE", lambda s: _text(s.get("state")), paint=_state_cell),
        Column("VALUE", lambda s: humane.count(s.get("value")), right=True),
        Column("ATTEMPTED", lambda s: humane.count(s.get("attempted")), right=True),
        Column("LOST", _lost, right=True, paint=_lost_cell),
    ]
    if figures.in_flight_applies(sets):
        cols.append(Column("IN FLIGHT", lambda s: humane.count(s.get("in_flight")), right=True))
    if figures.corrupt_applies(sets):
        cols.append(Column("CORRUPT", lambda s: humane.count(s.get("corrupt")), right=True))
    return cols


def status_table(sets: Sequence[Record], width: int = figures.WIDTH) -> str:
    """One row per set: id, name, variant, state, value, attempted, lost, ..., rate."""
    if not sets:
        return "no sets (start one with: labctl spawn queue 3)"
    cols = set_columns(sets)
    lost_pc = Column("LOST%", _lost_pc, right=True, drop=2)
    cols.insert([c.header for c in cols].index("LOST") + 1, lost_pc)
    cols.append(Column("RATE", _rate, right=True, drop=1))
    if len({s.get("owner") for s in sets}) > 1:  # a shared host: say whose each set is
        cols.append(Column("OWNER", lambda s: _text(s.get("owner")), drop=3))
    return "\n".join(lay_out(cols, sets, width))


def status_with_processes(sets: Sequence[Record], width: int = figures.WIDTH) -> str:
    """The status table, then each set's processes (``status --processes``)."""
    parts = [status_table(sets, width)]
    for s in sets:
        parts += ["", f"set {_text(s.get('id'))} processes", *processes(s.get("processes") or [])]
    return "\n".join(parts)


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
    return f"set {_text(s.get('id'))}{name}: {figures.variant(s)}, " + styled_state(
        _text(s.get("state"))
    )


def daemon_warnings(version: VersionRecord) -> list[str]:
    """labd's own trouble, one line each: a degraded history, a file moved aside."""
    lines = []
    history = version.get("history")
    if history is not None and history.get("state") == "degraded":
        waiting = history.get("pending")
        lines.append(
            f"warning: labd's history store is degraded: {_text(history.get('reason'))}"
            f" ({_text(waiting)} write(s) waiting); new sets are refused until it recovers"
        )
    for text in version.get("warnings") or ():
        lines.append(f"warning: {_text(text)}")
    return [click.style(line, fg="yellow") for line in lines]


def _times(s: StatusRecord) -> list[tuple[str, str]]:
    started, stopped = s.get("started_at"), s.get("stopped_at")
    ran = s.get("duration")  # labd's monotonic measure; wall times are for display
    if not isinstance(ran, int | float) and isinstance(started, int | float):
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
        ("lost", figures.paint_lost(s.get("lost"), lost)),
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
            humane.size(p.get("uss")),
        ]
        for p in procs
    ]
    headers = ("ROLE", "INDEX", "PID", "ALIVE", "EXIT", "CPU%", "RSS", "USS")
    return table(headers, rows, right={1, 2, 4, 5, 6, 7}, indent="  ")


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
    memory = s.get("memory_per_worker")
    if isinstance(memory, Mapping) and memory.get("rss") is not None:
        each = f"RSS {humane.size(memory.get('rss'))}, USS {humane.size(memory.get('uss'))}"
        lines += ["", f"memory per worker: {each}"]
    if s.get("containment"):  # a cgroup of its own, or process groups and subreapers
        lines += ["", f"containment: {_text(s.get('containment'))}"]
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
    """``set 3 "demo" (shared 10 lock=yes) stopped: value .., attempted .., lost .. (..%)``
    and ``corrupt`` where messages arrived garbled."""
    state = styled_state(_text(s.get("state")))
    lost, attempted, corrupt = s.get("lost"), s.get("attempted"), s.get("corrupt")
    name = f' "{s["name"]}"' if s.get("name") else ""
    lost_text = f"lost {humane.exact(lost)} ({humane.percent(lost, attempted)})"
    head = f"set {_text(s.get('id'))}{name} ({figures.variant(s)}) {state}:"
    body = (
        f"value {humane.exact(s.get('value'))}, attempted {humane.exact(attempted)},"
        f" {figures.paint_lost(lost, lost_text)}"
    )
    if corrupt:
        body += f", corrupt {humane.exact(corrupt)} ({humane.percent(corrupt, attempted)})"
    line = f"{head} {body}"
    # a terminal of 80 columns: the figures go on a line of their own, not cut mid-phrase
    return line if len(click.unstyle(line)) <= LINE_WIDTH else f"{head}\n  {body}"


def spawned(s: Record) -> str:
    """What spawn says: the new set, what it is, and where to look at it."""
    n, m = s.get("counters"), s.get("printers")
    plural = "" if m == 1 else "s"
    return (
        f"started set {_text(s.get('id'))}: {figures.variant(s)}"
        f" ({_text(n)} counters, {_text(m)} printer{plural})\n"
        f"  watch it: watch {_text(s.get('id'))}   its output: tail {_text(s.get('id'))}"
        f"   end it: stop {_text(s.get('id'))}"
    )


def tail_lines(lines: Sequence[tuple[int, str]]) -> str:
    """The printers' lines as they were printed (each is ``[seq, text]``)."""
    return "\n".join(str(text) for _seq, text in lines)
