"""Groups (one set over several labds) and sets of every context, as text for people."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labctl import figures, humane
from labctl.layout import Column, lay_out
from labctl.render import set_columns, styled_state
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


def all_contexts(sets: Sequence[Record], width: int = figures.WIDTH) -> str:
    """Every context's sets, the first column naming the context."""
    if not sets:
        return "no sets on any context"
    cols = [Column("CONTEXT", lambda s: str(s.get("context"))), *set_columns(sets)]
    return "\n".join(lay_out(cols, sets, width))
