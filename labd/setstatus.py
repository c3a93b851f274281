"""A set's status object (the contract's keys, see labd.protocol.SET_KEYS): of a live
set, from its metrics and the sampler's process stats; of an earlier one, from the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labd.metrics import Figures
from labd.processset import ProcessSet


def live_status(s: ProcessSet, stats: Mapping[int, tuple[float, int]]) -> dict[str, Any]:
    """The status of a set this daemon runs; ``stats`` maps pid to (cpu %, rss)."""
    figures = s.metrics.figures if s.metrics is not None else Figures()
    procs = []
    for w in s.workers:
        cpu, rss = stats.get(w.pid, (None, None)) if w.alive else (None, None)
        procs.append(
            {
                "role": w.role,
                "index": w.index,
                "pid": w.pid,
                "alive": w.alive,
                "exitcode": w.exitcode,
                "cpu_percent": cpu,
                "rss": rss,
            }
        )
    return {
        "id": s.spec.id,
        "name": s.spec.name,
        "mechanism": s.spec.mechanism,
        "state": s.state,
        "counters": s.spec.counters,
        "printers": s.spec.printers,
        "params": dict(s.spec.values),
        **figures.as_dict(),
        "started_at": s.started_at,
        "stopped_at": s.stopped_at,
        "processes": procs,
        "error": s.error,
        "extra": s.mechanism.figures(),
    }


def stored_status(row: dict[str, Any]) -> dict[str, Any]:
    """A set of an earlier daemon run, from the history store."""
    final = row.get("final")
    if isinstance(final, dict):
        out = dict(final)
        out["state"] = row["state"]
        return out
    keys = ("value", "attempted", "lost", "in_flight", "corrupt")
    return {
        "id": row["id"],
        "name": row["name"],
        "mechanism": row["mechanism"],
        "state": row["state"],
        "counters": row["counters"],
        "printers": row["printers"],
        "params": row["params"],
        **dict.fromkeys(keys, 0),
        "rate": 0.0,
        "latency_p50_us": None,
        "latency_p99_us": None,
        "started_at": row["started_at"],
        "stopped_at": row["stopped_at"],
        "processes": [],
        "error": row.get("error"),
    }
