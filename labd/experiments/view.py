"""The JSON shapes of experiments and of the sets' history (contract, schema_version 1).

``experiment``: ``schema_version``, ``id``, ``state``, times, ``error``, ``settings``,
``order`` ([point, repeat] per run, in the order run), ``machine``, ``progress``,
``runs`` (one per run) and ``cases`` (one per grid point, with its figures), and
``warnings``.
"""

from __future__ import annotations

import time
from typing import Any

from labd.experiments import stats
from labd.experiments.runner import Progress
from labd.experiments.spec import plan_from_dict

SCHEMA_VERSION = 1


def experiment(record: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
    plan = plan_from_dict(record["plan"])
    runs = record["runs"]
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": record["id"],
        "state": record["state"],
        "created_at": record["created_at"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
        "error": record["error"],
        "owner": record.get("owner"),
        "settings": {
            "cases": [
                p.case
                for p in plan.points
                if p.counters == plan.points[0].counters
                and p.sweep_value == plan.points[0].sweep_value
            ],
            "counters": plan.counters,
            "sweep_key": plan.sweep_key,
            "sweep_values": sorted(
                {p.sweep_value for p in plan.points if p.sweep_value},
                key=[p.sweep_value for p in plan.points].index,
            ),
            "seconds": plan.seconds,
            "warmup": plan.warmup,
            "repeat": plan.repeat,
            "interval": plan.interval,
            "seed": plan.seed,
            "order": "shuffled per round",
        },
        "order": [list(x) for x in plan.order],
        "machine": record["machine"],
        "progress": _progress(record, plan.seconds + plan.warmup, len(plan.order), progress),
        "runs": [_run(r, plan.points[r["point"]]) for r in runs],
    }
    out.update(stats.results(plan, runs, record["machine"]))
    return out


def _run(run: dict[str, Any], point: Any) -> dict[str, Any]:
    out = {
        "seq": run["seq"],
        "case": point.case,
        "counters": point.counters,
        "sweep_value": point.sweep_value,
        "repeat": run["repeat"],
        "set_id": run["set_id"],
        "state": run["state"],
        "error": run["error"],
    }
    result = dict(run["result"] or {})
    hist = stats.merge_histograms([result.pop("histogram", {})])
    result.pop("params", None)
    result.pop("set_id", None)
    out.update(result)
    if any(hist):
        out.update(stats.latency(hist))  # p50, p90, p99 and max, as a case has
    return out


def _progress(
    record: dict[str, Any], per_run: float, total: int, live: Progress | None
) -> dict[str, Any]:
    done = sum(1 for r in record["runs"] if r["state"] == "done")
    out: dict[str, Any] = {"done": done, "runs": total, "run": None, "case": None, "eta_s": None}
    if live is not None and live.experiment == record["id"]:
        elapsed = time.monotonic() - live.started
        each = elapsed / live.run if live.run else per_run + 1.0
        out.update(run=live.run + 1, case=live.case, eta_s=round(each * (total - live.run), 1))
    return out


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """One experiment as a row of ``labctl experiments``."""
    plan = record["plan"]
    cases: list[str] = []
    for p in plan["points"]:
        if p["case"] not in cases:
            cases.append(p["case"])
    return {
        "id": record["id"],
        "state": record["state"],
        "created_at": record["created_at"],
        "finished_at": record["finished_at"],
        "cases": cases,
        "counters": plan["counters"],
        "sweep_key": plan["sweep_key"],
        "runs_done": sum(1 for r in record["runs"] if r["state"] == "done"),
        "runs": len(plan["order"]),
        "error": record["error"],
        "owner": record.get("owner"),
    }


def history_row(row: dict[str, Any]) -> dict[str, Any]:
    """A finished set as a row of ``labctl history``."""
    final = row.get("final") or {}
    started, stopped = row.get("started_at"), row.get("stopped_at")
    return {
        "id": row["id"],
        "name": row["name"],
        "mechanism": row["mechanism"],
        "counters": row["counters"],
        "printers": row["printers"],
        "params": row["params"],
        "state": row["state"],
        "started_at": started,
        "stopped_at": stopped,
        "duration_s": round(stopped - started, 3) if started and stopped else None,
        **{k: final.get(k) for k in ("value", "attempted", "lost", "corrupt", "rate")},
        "error": row.get("error"),
    }
