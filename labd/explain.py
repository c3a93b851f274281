"""The story of a set, for ``labctl explain``: what was attempted, what the value shows,
how many were lost and why, in plain words with the set's own numbers.

With ``trace=yes`` each lost update is reconstructed from the counters' traces
(:mod:`labd.worker.trace`). Order every traced write by its time: the memory holds what
the last write wrote, so a write of ``v + 1`` by a counter that read ``v`` while the
memory held ``m`` wipes ``m - v`` increments, those written by the others between its
read and its write. Summed over the writes this is exactly ``increments - (last value -
first value)``: the updates lost within the traced window. Collisions are shown grouped
by the value read (``counters 2 and 7 both read 41 within 7 us; both wrote 42``). A
write that takes the value back below what another counter had read can be undone in
part by that counter's write (it writes above the overwrite): those increments count
again, so the collisions add up to the updates lost, exactly.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_COLLISIONS = 20  # in the answer; the totals count them all
MAX_OVER = 10  # counters named as overwritten by one write
PIPE_BUF = 4096
CORRUPT_NOTE = "corrupt: "  # a printer's line about one corrupt message (labd.mechanisms.pipe)
FRAME_HEAD = 28  # the pipe mechanism's header (magic, seq, sent_ns, length, crc)
TRACE_COST = (
    "the trace costs each increment two clock reads and four stores, outside its "
    "read-modify-write window: about as much CPU as the increment itself, so a traced "
    "flat-out set runs at about half the rate (bench/trace_cost.py); at a paced tick, "
    "nothing measurable"
)


@dataclass
class Write:
    counter: int
    t_read: int
    read: int
    t_write: int
    wiped: int = 0
    over: list[int] = field(default_factory=list)  # counters whose increments it wiped


SETTLE_NS = 1_000_000  # a write this close to a live snapshot may not be stored yet


def merged(
    records: Sequence[Sequence[Sequence[int]]], written: Sequence[int], taken_ns: int | None
) -> list[Write]:
    """Every traced increment within the window all counters' traces cover, by write."""
    rings = [r for r in records if r]
    if not rings:
        return []
    # a counter that wrote more than its ring holds lost its oldest records: before its
    # first one left, the trace is not whole
    cut = [r for r, n in zip(records, written, strict=False) if r and n > len(r)]
    start = max((r[0][0] for r in cut), default=0)
    # live: the rings were copied one after the other from ``taken_ns`` on; the writes
    # before it are in every copy
    end = taken_ns - SETTLE_NS if taken_ns is not None else None
    writes = [
        Write(i, t0, v, t1)
        for i, ring in enumerate(records)
        for t0, v, t1 in ring
        if t0 >= start and (end is None or t1 <= end)
    ]
    writes.sort(key=lambda w: w.t_write)
    return writes


def replay(writes: list[Write]) -> int:
    """Fill ``wiped`` and ``over`` of each write; return the updates lost in the window
    (over the whole run of a stopped set: its ``lost``, exactly)."""
    if not writes:
        return 0
    memory = writes[0].read
    wiping: list[Write] = []  # writes that wiped increments, some maybe restored later
    t_writes = [w.t_write for w in writes]  # ascending: writes are in write order
    for k, w in enumerate(writes):
        gap = memory - w.read
        if gap > 0:
            w.wiped = gap
            # the writes between its read and its own write, the last ``gap`` of them
            # (a bisection: a scan of all earlier writes made a flat-out trace of 60k
            # increments take 80 s)
            after_read = bisect.bisect_right(t_writes, w.t_read, 0, k)
            w.over = [o.counter for o in writes[max(after_read, k - gap) : k]]
            wiping.append(w)
        elif gap < 0:
            _restore(wiping, -gap)
        memory = w.read + 1
    # = len(writes) - (memory - writes[0].read) when the window starts whole; a counter
    # that read before the window may restore what was wiped before it: not counted
    return sum(w.wiped for w in wiping)


def _restore(wiping: list[Write], n: int) -> None:
    """A counter read a value an overwrite later took back (it read before the
    overwrite) and wrote above it: the last ``n`` increments wiped count again."""
    while n and wiping:
        last = wiping[-1]
        take = min(n, last.wiped)
        last.wiped -= take
        last.over = last.over[: last.wiped]
        n -= take
        if not last.wiped:
            wiping.pop()


def collisions(writes: Sequence[Write]) -> list[dict[str, Any]]:
    """The lost updates grouped by the value the colliding counters read."""
    by_value: dict[int, list[Write]] = {}
    for w in writes:
        by_value.setdefault(w.read, []).append(w)
    out = []
    for value, group in sorted(by_value.items()):
        lost = sum(w.wiped for w in group)
        if not lost:
            continue
        t0 = min(w.t_read for w in group)
        out.append(
            {
                "value_read": value,
                "wrote": value + 1,
                "lost": lost,
                "read_within_us": round((max(w.t_read for w in group) - t0) / 1000, 1),
                "counters": [
                    {
                        "counter": w.counter,
                        "read_at_us": round((w.t_read - t0) / 1000, 1),
                        "wrote_at_us": round((w.t_write - t0) / 1000, 1),
                        "wiped": w.wiped,
                        "over": w.over[:MAX_OVER],
                    }
                    for w in sorted(group, key=lambda w: w.t_read)
                ],
            }
        )
    return out


def traced(trace: Mapping[str, Any], live: bool) -> dict[str, Any]:
    """What the trace shows: its window, its increments, its lost updates."""
    depth = int(trace.get("depth") or 0)
    records = trace.get("records") or []
    written = trace.get("written") or [depth + 1] * len(records)
    writes = merged(records, written, int(trace.get("taken_ns") or 0) if live else None)
    lost = replay(writes)
    found = collisions(writes)
    span = (writes[-1].t_write - writes[0].t_read) / 1e9 if writes else 0.0
    complete = all(n <= len(r) for r, n in zip(records, written, strict=False))
    return {
        "increments": len(writes),
        "lost": lost,
        "seconds": round(span, 6),
        "whole_run": complete and not live,
        "depth": trace.get("depth"),
        "collisions_total": len(found),
        "collisions_lost": sum(c["lost"] for c in found),
        "collisions": found[:MAX_COLLISIONS],
        "cost": TRACE_COST,
    }


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _head(s: Mapping[str, Any]) -> str:
    attempted, value = int(s.get("attempted") or 0), int(s.get("value") or 0)
    lost = int(s.get("lost") or 0)
    return (
        f"{s.get('counters')} counters attempted {attempted:,} increments; the value shows "
        f"{value:,}: {lost:,} lost ({_pct(lost, attempted)})."
    )


def _why_racy(s: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    window = float(params.get("window") or 0.0)
    where = (
        "the Manager's Value (a round trip each)"
        if s.get("mechanism") == "manager"
        else "the Value"
    )
    held = (
        f", holding it window={window:g} s in between (the set was made to show the race)"
        if window
        else ""
    )
    lines = [
        f"Each increment is value = value + 1: a read of {where}, then a write{held}.",
        "When two counters read the same value, both write value + 1: one increment is lost.",
    ]
    if not params.get("trace"):
        lines.append(
            f"To see each lost update: spawn {s.get('mechanism')} {s.get('counters')} "
            "trace=yes ... then explain it."
        )
    return lines


def _why_safe(s: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    if params.get("lock"):
        return [
            "Nothing was lost: the lock serialised each read and its write, so no counter "
            "could read the value while another held it between its read and its write."
        ]
    in_flight = int(s.get("in_flight") or 0)
    return [
        "Nothing was lost: each increment was a message of its own; nothing is "
        "overwritten, the printers count what arrives"
        + (f" ({in_flight:,} still on their way)." if in_flight else ".")
    ]


def _why_corrupt(s: Mapping[str, Any], params: Mapping[str, Any]) -> list[str]:
    corrupt, attempted = int(s.get("corrupt") or 0), int(s.get("attempted") or 0)
    size = FRAME_HEAD + int(params.get("payload") or 16)
    atomic = size <= PIPE_BUF
    lines = [
        f"{corrupt:,} of {attempted:,} messages arrived corrupt ({_pct(corrupt, attempted)}): "
        "all counters write one end of one pipe."
    ]
    if atomic:
        lines.append(
            f"Each message is {size:,} bytes, within PIPE_BUF ({PIPE_BUF:,}): such a write "
            "is atomic, so another counter's bytes cannot land inside it."
        )
    else:
        lines.append(
            f"Each message is {size:,} bytes, more than PIPE_BUF ({PIPE_BUF:,}): when the "
            "pipe fills in the middle of one, the writer waits, another counter's write "
            "goes in, and the reader gets the first message cut by the second's bytes; "
            "its frame check fails, and it is counted corrupt (it arrived, it is not lost)."
        )
    return lines


def kind_of(s: Mapping[str, Any]) -> str:
    params = s.get("params") or {}
    if params.get("shared_end"):
        return "corrupt"
    if s.get("messages"):
        return "messages"
    if params.get("lock"):
        return "locked"
    return "race"


def story(
    s: Mapping[str, Any],
    trace: Mapping[str, Any] | None,
    live: bool,
    output: Sequence[str] = (),
) -> dict[str, Any]:
    """The explain record: the set's figures, its kind, the story, and the trace's;
    ``output`` is the printers' (a shared pipe end's printers describe a few corrupt
    messages there)."""
    params = s.get("params") or {}
    kind = kind_of(s)
    why = {"race": _why_racy, "locked": _why_safe, "messages": _why_safe}.get(kind, _why_corrupt)
    lines = [_head(s), *why(s, params)]
    if kind == "race" and not int(s.get("lost") or 0):
        lines.append("Here no two counters happened to read the same value: none was lost.")
    anatomy = [t.removeprefix(CORRUPT_NOTE) for t in output if t.startswith(CORRUPT_NOTE)]
    if kind == "corrupt" and anatomy:
        lines.append("For instance, as the printers saw them: " + "; ".join(anatomy[:3]) + ".")
    out: dict[str, Any] = {
        key: s.get(key)
        for key in ("id", "name", "mechanism", "variant", "state", "counters", "attempted",
                    "value", "lost", "in_flight", "corrupt", "per_counter")
    }  # fmt: skip
    out.update(kind=kind, live=live, story=lines, trace=None)
    if trace is not None:
        out["trace"] = traced(trace, live)
    return out
