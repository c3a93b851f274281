"""Groups (one set over several labds) and sets of every context, as text for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labctl import humane
from labctl.render import status_row, styled_state
from labctl.table import table
from labd.protocol import typed_value

Record = Mapping[str, Any]


def group(g: Record) -> str:
    """The group, one row per part, then its totals."""
    params = " ".join(f"{k}={typed_value(v)}" for k, v in (g.get("params") or {}).items())
    head = f"group {g.get('group')}  {g.get('mechanism')} {g.get('counters')}  {params}".rstrip()
    rows = [
        [
            str(p.get("context")),
            str(p.get("set")),
            str((p.get("unreachable") and "unreachable") or p.get("state")),
            humane.count(p.get("counters")),
            humane.count(p.get("attempted")),
            humane.count(p.get("value")),
        ]
        for p in g.get("parts") or ()
    ]
    lines = [head, *table(("CONTEXT", "SET", "STATE", "COUNTERS", "ATTEMPTED", "VALUE"), rows)]
    lines.append(totals(g))
    lines += [
        f"  {p['context']}: {p['unreachable']}"
        for p in g.get("parts") or ()
        if p.get("unreachable")
    ]
    return "\n".join(lines)


def totals(g: Record) -> str:
    retries = f", retries {humane.exact(g['retries'])}" if g.get("retries") is not None else ""
    return (
        f"{styled_state(str(g.get('state')))}: value {humane.exact(g.get('value'))}, "
        f"attempted {humane.exact(g.get('attempted'))}, lost {humane.exact(g.get('lost'))} "
        f"({humane.percent(g.get('lost'), g.get('attempted'))}){retries}"
    )


def stopped(g: Record) -> str:
    return f"group {g.get('group')} ({g.get('mechanism')}) {totals(g)}"


def all_contexts(sets: Sequence[Record]) -> str:
    """Every context's sets, the first column naming the context."""
    if not sets:
        return "no sets on any context"
    rows = [[str(s.get("context")), *status_row(s)] for s in sets]
    headers = ("CONTEXT", "ID", "NAME", "MECHANISM", "STATE", "COUNTERS", "VALUE", "ATTEMPTED")
    headers += ("LOST", "LOST%", "RATE")  # type: ignore[assignment]

    def style(column: int, cell: str, padded: str) -> str:
        return styled_state(cell, padded) if column == 4 else padded

    return "\n".join(table(headers, rows, right={1, 5, 6, 7, 8, 9, 10}, style=style))
