"""A set's status object (the contract's keys, see labd.protocol.SET_KEYS): of a live
set, from its metrics; of an earlier one, from the store. A status object is one row
whatever the set's size; its processes one by one come with inspect."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from labd.errors import HistoryError
from labd.metrics import Figures
from labd.processset import ProcessSet
from labd.procstats import ProcStats, read_uss
from labd.protocol import FIGURE_KEYS, MemoryRecord, ProcessRecord, StatusRecord
from labd.store import SetRow
from labd.variant import variant

if TYPE_CHECKING:
    from labd.history import History

log = logging.getLogger("labd.lab")


def live_status(s: ProcessSet) -> StatusRecord:
    """The status of a set this daemon runs: one row, whatever the set's size (its
    processes are counted, not listed: see :func:`process_records`)."""
    figures = s.metrics.figures if s.metrics is not None else Figures()
    workers = list(s.workers)
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
        "processes_alive": sum(1 for w in workers if w.alive),
        "processes_total": s.spec.counters + s.spec.printers,
        "error": s.error,
        "extra": s.mechanism.figures(),
        "owner": s.spec.owner,
        "containment": "cgroup" if s.cgroup else "pgroup",  # labd.cgroups
    }


def process_records(s: ProcessSet, stats: ProcStats, uss: bool = True) -> list[ProcessRecord]:
    """Each process of a set (for inspect): pid, state, CPU %, RSS and (``uss``) USS."""
    workers = sorted(s.workers, key=lambda w: (w.role != "printer", w.index))
    now = stats.read(w.pid for w in workers if w.alive)
    records: list[ProcessRecord] = []
    for w in workers:
        cpu, rss = now.get(w.pid, (None, None)) if w.alive else (None, None)
        records.append(
            {
                "role": w.role,
                "index": w.index,
                "pid": w.pid,
                "alive": w.alive,
                "exitcode": w.exitcode,
                "cpu_percent": cpu,
                "rss": rss,
                "uss": read_uss(w.pid) if uss and w.alive else None,
            }
        )
    return records


def memory_per_worker(records: list[ProcessRecord]) -> MemoryRecord:
    """The mean RSS and USS (bytes) of a set's live workers: what one more costs."""
    rss = [r["rss"] for r in records if isinstance(r.get("rss"), int)]
    uss = [r["uss"] for r in records if isinstance(r.get("uss"), int)]
    return {
        "rss": sum(x for x in rss if x is not None) // len(rss) if rss else None,
        "uss": sum(x for x in uss if x is not None) // len(uss) if uss else None,
    }


def stored_status(row: SetRow, last: dict[str, Any] | None = None) -> StatusRecord:
    """A set of an earlier daemon run, from the history store: its final status, else
    its ``last`` sample's figures (a set labd was killed under), else zeros."""
    final = row["final"]
    if isinstance(final, dict):
        out = final.copy()
        out["state"] = row["state"]
        out.setdefault("owner", row.get("owner"))
        return counted(cast(dict[str, Any], out))
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
        "processes_alive": 0,
        "processes_total": row["counters"] + row["printers"],
        "error": row["error"],
        "owner": row.get("owner"),
    }


def counted(status: dict[str, Any]) -> StatusRecord:
    """A stored final status lists its processes (for inspect): status counts them."""
    procs = status.pop("processes", None)
    if isinstance(procs, list):
        status.setdefault("processes_alive", sum(1 for p in procs if p.get("alive")))
        status.setdefault("processes_total", len(procs))
    return cast(StatusRecord, status)


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
