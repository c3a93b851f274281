"""A set's status object (the contract's keys, see labd.protocol.SET_KEYS): of a live
set, from its metrics and the sampler's process stats; of an earlier one, from the store."""

from __future__ import annotations

from collections.abc import Mapping

from labd.metrics import Figures
from labd.processset import ProcessSet
from labd.protocol import ProcessRecord, StatusRecord
from labd.store import SetRow
from labd.variant import variant


def live_status(s: ProcessSet, stats: Mapping[int, tuple[float, int]]) -> StatusRecord:
    """The status of a set this daemon runs; ``stats`` maps pid to (cpu %, rss)."""
    figures = s.metrics.figures if s.metrics is not None else Figures()
    procs: list[ProcessRecord] = []
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
        "variant": variant(
            s.spec.mechanism, s.spec.counters, s.spec.values, type(s.mechanism).params
        ),
        "messages": type(s.mechanism).messages,
        "state": s.state,
        "counters": s.spec.counters,
        "printers": s.spec.printers,
        "params": dict(s.spec.values),
        **figures.as_record(),
        "sampled_at": figures.sampled_at,
        "started_at": s.started_at,
        "stopped_at": s.stopped_at,
        "processes": procs,
        "error": s.error,
    }


def stored_status(row: SetRow) -> StatusRecord:
    """A set of an earlier daemon run, from the history store."""
    final = row["final"]
    if isinstance(final, dict):
        out = final.copy()
        out["state"] = row["state"]
        return out
    return {
        "id": row["id"],
        "name": row["name"],
        "mechanism": row["mechanism"],
        "variant": f"{row['mechanism']} {row['counters']}",
        "messages": None,
        "state": row["state"],
        "counters": row["counters"],
        "printers": row["printers"],
        "params": row["params"],
        "value": 0,
        "attempted": 0,
        "lost": 0,
        "in_flight": 0,
        "corrupt": 0,
        "rate": 0.0,
        "latency_p50_us": None,
        "latency_p99_us": None,
        "sampled_at": row["stopped_at"],
        "started_at": row["started_at"],
        "stopped_at": row["stopped_at"],
        "processes": [],
        "error": row["error"],
    }
