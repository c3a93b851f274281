"""Charts as PNG or SVG files, with matplotlib (the optional extra ``ipclab[plot]``).

matplotlib is imported only here and only when a file is asked for; :func:`check` runs
before an experiment starts, so a missing extra or a bad file name is one clear line
up front, not after the runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labd.errors import UsageError

FORMATS = (".png", ".svg")
Record = Mapping[str, Any]


def check(path: str) -> Path:
    """The file to write, once the extension and matplotlib are known to be fine."""
    target = Path(path)
    if target.suffix.lower() not in FORMATS:
        raise UsageError(f"cannot plot to {path!r}: give a file ending in .png or .svg")
    if not target.parent.is_dir():
        raise UsageError(f"cannot plot to {path!r}: no directory {str(target.parent)!r}")
    _pyplot()
    return target


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "plotting to a file needs matplotlib: pip install 'ipclab[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def experiment(e: Record, path: str) -> None:
    """Rate per case with min-max error bars (a line per case over a grid), and lost %."""
    plt = _pyplot()
    cases = [c for c in e.get("cases", []) if c.get("rate_median") is not None]
    fig, (rate_ax, lost_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    settings = e.get("settings", {})
    grid = len(settings.get("counters") or []) > 1 or bool(settings.get("sweep_key"))
    if grid:
        _grid(rate_ax, lost_ax, cases, settings)
    else:
        _bars(rate_ax, lost_ax, cases)
    values = [c["rate_median"] for c in cases if c["rate_median"] > 0]
    if values and max(values) / min(values) >= 100:
        rate_ax.set_yscale("log")
    rate_ax.set_ylabel("increments/s (median, min-max)")
    lost_ax.set_ylabel("lost %")
    machine = e.get("machine", {})
    fig.suptitle(
        f"ipclab experiment {e.get('id')}: {machine.get('cpu_model', '')}, "
        f"{machine.get('cpus_usable', '?')} cores, Python {machine.get('python', '?')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _errors(cases: Sequence[Record]) -> list[list[float]]:
    return [
        [c["rate_median"] - c["rate_min"] for c in cases],
        [c["rate_max"] - c["rate_median"] for c in cases],
    ]


def _bars(rate_ax: Any, lost_ax: Any, cases: Sequence[Record]) -> None:
    names = [c["case"] for c in cases]
    rate_ax.bar(names, [c["rate_median"] for c in cases], yerr=_errors(cases), capsize=4)
    lost_ax.bar(names, [c.get("lost_pct") or 0 for c in cases], color="tab:red")
    for ax in (rate_ax, lost_ax):
        ax.tick_params(axis="x", labelrotation=30)


def _grid(rate_ax: Any, lost_ax: Any, cases: Sequence[Record], settings: Record) -> None:
    key = settings.get("sweep_key") or "counters"
    series: dict[str, list[Record]] = {}
    for c in cases:
        name = c["case"] if key == "counters" else f"{c['case']} n={c['counters']}"
        series.setdefault(name, []).append(c)
    order = [str(v) for v in (settings.get("sweep_values") or settings.get("counters") or [])]
    for name, members in series.items():
        members = sorted(members, key=lambda c: order.index(_x(c, key)))
        xs = [_x(c, key) for c in members]
        rates = [c["rate_median"] for c in members]
        rate_ax.errorbar(xs, rates, yerr=_errors(members), capsize=3, marker="o", label=name)
        lost_ax.plot(xs, [c.get("lost_pct") or 0 for c in members], marker="o", label=name)
    for ax in (rate_ax, lost_ax):
        ax.set_xlabel(key)
    rate_ax.legend(fontsize=8)


def _x(c: Record, key: str) -> str:
    return str(c["counters"] if key == "counters" else c["sweep_value"])


def samples(data: Record, path: str) -> None:
    """Value, attempted and lost of a set over time."""
    plt = _pyplot()
    rows = data.get("samples", [])
    t0 = rows[0]["at"] if rows else 0.0
    ts = [r["at"] - t0 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for key in ("attempted", "value", "lost"):
        ax.plot(ts, [r.get(key) or 0 for r in rows], label=key)
    ax.set_xlabel("seconds since the first sample")
    ax.set_ylabel("increments")
    ax.set_title(f"set {data.get('id')}: {data.get('mechanism')} x{data.get('counters')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
