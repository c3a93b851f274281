"""A set's status object (the contract's keys, see labd.protocol.SET_KEYS): of a live
set, from its metrics and the sampler's process stats; of an earlier one, from the store."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from labd.errors import HistoryError
from labd.metrics import Figures
from labd.processset import ProcessSet
from labd.protocol import FIGURE_KEYS, ProcessRecord, StatusRecord
from labd.store import SetRow
from labd.variant import variant

if TYPE_CHECKING:
    from labd.history import History

log = logging.getLogger("labd.lab")


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
        "duration": s.duration,
        "processes": procs,
        "error": s.error,
        "extra": s.mechanism.figures(),
    }


def stored_status(row: SetRow, last: dict[str, Any] | None = None) -> StatusRecord:
    """A set of an earlier daemon run, from the history store: its final status, else
    its ``last`` sample's figures (a set labd was killed under), else zeros."""
    final = row["final"]
    if isinstance(final, dict):
        out = final.copy()
        out["state"] = row["state"]
        return out
    figures: dict[str, Any] = {
        "value": 0,
        "attempted": 0,
        "lost": 0,
        "in_flight": 0,
        "corrupt": 0,
        "rate": 0.0,
        "latency_p50_us": None,
        "latency_p99_us": None,
    }
    duration = None
    if last is not None:
        figures.update((k, last[k]) for k in FIGURE_KEYS)
        started = row["started_at"]
        if started is not None and last["at"] >= started:
            duration = last["at"] - started  # up to its last sample: wall clock, the best left
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
        **figures,  # type: ignore[typeddict-item]
        "sampled_at": last["at"] if last is not None else row["stopped_at"],
        "started_at": row["started_at"],
        "stopped_at": row["stopped_at"],
        "duration": duration,
        "processes": [],
        "error": row["error"],
    }


def keep_last_figures(history: History, set_ids: list[int]) -> None:
    """Sets labd was killed under keep, as final, the figures of their last sample."""
    for set_id in set_ids:
        try:
            row = history.get(set_id)
            last = history.samples(set_id, limit=1) if row is not None else []
        except HistoryError as exc:
            log.warning("set %d: its last figures cannot be read: %s", set_id, exc.message)
            continue
        if row is not None:
            history.finish(set_id, stored_status(row, last[0] if last else None))
