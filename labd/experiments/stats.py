"""The figures of an experiment, computed from its stored runs (so a report is always
rendered from the same numbers, again and again).

Per grid point: the median rate of its runs with their spread (min-max, and the median
absolute deviation), lost % and corrupt % (exact, from each set's final tallies), the
latency percentiles of the windows' merged histograms (message mechanisms), CPU
microseconds per increment, and the ratio to the best point of its column (same
counters and swept value) with an uncertainty from both points' spreads. Two points
whose min-max ranges overlap differ by less than their noise: "not significant".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from labd.experiments.spec import Plan, Point
from labd.worker import board

SPREAD_WARN_PCT = 10.0


def merge_histograms(hists: Iterable[dict[str, int]]) -> list[int]:
    out = [0] * board.BUCKETS
    for h in hists:
        for bucket, n in h.items():
            out[int(bucket)] += int(n)
    return out


def latency(hist: Sequence[int]) -> dict[str, float | None]:
    top = max((i for i, n in enumerate(hist) if n), default=None)
    return {
        "latency_p50_us": board.percentile_us(hist, 0.50),
        "latency_p90_us": board.percentile_us(hist, 0.90),
        "latency_p99_us": board.percentile_us(hist, 0.99),
        "latency_max_us": None if top is None else round(board.bucket_upper_us(top), 1),
    }


def point_figures(point: Point, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one point from its finished runs' results."""
    out: dict[str, Any] = {
        "case": point.case,
        "mechanism": point.mechanism,
        "counters": point.counters,
        "sweep_key": point.sweep_key,
        "sweep_value": point.sweep_value,
        # the values every run used (name and duration are the experiment's own)
        "params": _used(runs[0]["params"]) if runs else None,
        "runs": len(runs),
    }
    rates = [float(r["rate"]) for r in runs]
    if not rates:
        return {**out, "rate_median": None}
    med = statistics.median(rates)
    attempted = sum(int(r["attempted_total"]) for r in runs)
    hist = merge_histograms(r["histogram"] for r in runs)
    out.update(
        rate_median=round(med, 1),
        rate_min=round(min(rates), 1),
        rate_max=round(max(rates), 1),
        rate_mad=round(statistics.median(abs(x - med) for x in rates), 1),
        spread_pct=round((max(rates) - min(rates)) / med * 100, 1) if med else 0.0,
        lost_pct=_pct(sum(int(r["lost"]) for r in runs), attempted),
        corrupt_pct=_pct(sum(int(r["corrupt"]) for r in runs), attempted),
        cpu_us_per_inc=_median_or_none(r.get("cpu_us_per_inc") for r in runs),
        **(latency(hist) if any(hist) else {}),
    )
    return out


def _used(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in ("name", "duration")}


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 3) if whole else 0.0


def _median_or_none(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 3) if kept else None


def compare(figures: list[dict[str, Any]], points: list[Point]) -> None:
    """Add ``ratio``, ``ratio_err``, ``best`` and ``significant`` to each point's figures,
    against the best median rate of its column."""
    columns: dict[tuple[int, str | None], list[int]] = {}
    for i, p in enumerate(points):
        if figures[i].get("rate_median"):
            columns.setdefault(p.column(), []).append(i)
    for members in columns.values():
        best = max(members, key=lambda i: figures[i]["rate_median"])
        b = figures[best]
        for i in members:
            f = figures[i]
            ratio = f["rate_median"] / b["rate_median"]
            err = ratio * math.hypot(_half_spread(f), _half_spread(b))
            f["ratio"] = round(ratio, 4)
            f["ratio_err"] = round(err, 4)
            f["best"] = i == best
            f["significant"] = None if i == best else _significant(f, b)


def _half_spread(f: dict[str, Any]) -> float:
    """Half the min-max range, relative to the median."""
    return float((f["rate_max"] - f["rate_min"]) / 2 / f["rate_median"])


def _significant(f: dict[str, Any], best: dict[str, Any]) -> bool | None:
    """Whether the ranges are apart; None with a single run each (no noise estimate)."""
    if f["runs"] < 2 or best["runs"] < 2:
        return None
    return bool(f["rate_max"] < best["rate_min"] or f["rate_min"] > best["rate_max"])


def warnings(figures: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    out = []
    noisy = [
        f
        for f in figures
        if f.get("spread_pct") is not None and f["runs"] > 1 and f["spread_pct"] > SPREAD_WARN_PCT
    ]
    advice = "noisy: more --repeat or a quieter host"
    if len(noisy) <= 2:
        out += [
            f"{label(f)}: runs spread {f['spread_pct']:.0f}% (min-max over median, over "
            f"{SPREAD_WARN_PCT:.0f}%): {advice}"
            for f in noisy
        ]
    else:
        worst = max(noisy, key=lambda f: f["spread_pct"])
        out.append(
            f"runs spread over {SPREAD_WARN_PCT:.0f}% (min-max over median) in {len(noisy)} of "
            f"{len(figures)} cases, up to {worst['spread_pct']:.0f}% ({label(worst)}): {advice}"
        )
    # Before the runs only: the load after them is mostly the experiment's own (a
    # flat-out run of N counters keeps N + 1 processes runnable; 4 counters on 2 cores
    # left a quiet host at 3.0), which says nothing of other work.
    cores = machine.get("cpus_usable") or machine.get("cores") or 1
    before = machine.get("load_before")
    if before and before[0] > cores:
        out.append(
            f"load average {before[0]:.1f} before the runs exceeds the {cores} usable "
            "cores: other work competed with them"
        )
    return out


def label(f: dict[str, Any]) -> str:
    """A point as a user would name it: the case, its counters, its swept value."""
    text = f"{f['case']} n={f['counters']}"
    if f.get("sweep_key"):
        text += f" {f['sweep_key']}={f['sweep_value']}"
    return text


def results(plan: Plan, runs: list[dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """Per-point figures and warnings from the runs that finished."""
    by_point: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        if run["state"] == "done" and run.get("result"):
            by_point.setdefault(run["point"], []).append(run["result"])
    figures = [point_figures(p, by_point.get(i, [])) for i, p in enumerate(plan.points)]
    compare(figures, plan.points)
    return {"cases": figures, "warnings": warnings(figures, machine)}
