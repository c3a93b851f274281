"""An experiment as text (a table, warnings, charts), Markdown or CSV; the experiments'
list; the sets' history. Each function takes decoded JSON and returns the whole text.
Text fits 80 columns."""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from labctl import charts, humane
from labctl.table import table

Record = Mapping[str, Any]
CASE_KEYS = (
    "case",
    "mechanism",
    "counters",
    "sweep_key",
    "sweep_value",
    "runs",
    "rate_median",
    "rate_min",
    "rate_max",
    "rate_mad",
    "spread_pct",
    "lost_pct",
    "corrupt_pct",
    "cpu_us_per_inc",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "latency_max_us",
    "ratio",
    "ratio_err",
    "best",
    "significant",
    "params",
)
RUN_KEYS = (
    "seq",
    "case",
    "counters",
    "sweep_value",
    "repeat",
    "set_id",
    "state",
    "window_s",
    "attempted",
    "rate",
    "attempted_total",
    "lost",
    "corrupt",
    "cpu_us_per_inc",
    "latency_p50_us",
    "latency_p90_us",
    "latency_p99_us",
    "latency_max_us",
    "error",
)
WIDTH = 80


def machine_line(m: Record) -> str:
    before = m.get("load_before") or []
    after = m.get("load_after") or []
    load = f"load {before[0] if before else '-'} -> {after[0] if after else '-'}"
    return (
        f"machine: {m.get('cpu_model', '?')}, {m.get('cpus_usable', m.get('cores', '?'))} "
        f"cores, Python {m.get('python', '?')}, {m.get('start_method', '?')}, {load}"
    )


def settings_line(e: Record) -> str:
    s = e.get("settings", {})
    pace = "flat out" if not s.get("interval") else f"interval {s['interval']:g} s"
    whose = f" ({e['owner']}'s)" if e.get("owner") else ""
    return (
        f"experiment e{e['id']}{whose}: {e['state']}, {s.get('repeat')} run(s) per case, "
        f"window {s.get('seconds', 0):g} s after {s.get('warmup', 0):g} s warm-up, {pace}, "
        f"order shuffled per round (seed {s.get('seed')})"
    )


def _wrapped(text: str, indent: str = "  ") -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def label(c: Record, grid: bool) -> str:
    text = str(c["case"])
    if grid and c.get("sweep_key"):
        text += f" {c['sweep_key']}={c['sweep_value']}"
    return text


def _pct(value: float | None) -> str:
    if value is None:
        return humane.MISSING
    if 0 < value < 0.01:
        return "<0.01"
    return f"{value:.2f}"


def versus(c: Record) -> str:
    if c.get("rate_median") is None:
        return humane.MISSING
    if c.get("best"):
        return "best"
    text = f"{c['ratio']:.2f}±{c['ratio_err']:.2f}"
    return text + (" n.s." if c.get("significant") is False else "")


def _grid(e: Record) -> bool:
    s = e.get("settings", {})
    return len(s.get("counters") or []) > 1 or bool(s.get("sweep_key"))


def case_table(e: Record) -> list[str]:
    headers = ("CASE", "N", "RATE/S", "±%", "LOST%", "CORR%", "CPU US", "VS BEST")
    rows = []
    for c in e.get("cases", []):
        rows.append(
            [
                label(c, True)[:24],
                str(c["counters"]),
                humane.number(c.get("rate_median")),
                humane.MISSING if c.get("spread_pct") is None else f"{c['spread_pct']:.0f}",
                _pct(c.get("lost_pct")),
                _pct(c.get("corrupt_pct")),
                humane.number(c.get("cpu_us_per_inc")),
                versus(c),
            ]
        )
    return table(headers, rows, right=range(1, 7))


def latency_table(e: Record) -> list[str]:
    keys = ("latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_max_us")
    rows = [
        [label(c, True)[:24], str(c["counters"]), *(humane.number(c.get(k)) for k in keys)]
        for c in e.get("cases", [])
        if c.get("latency_p50_us") is not None
    ]
    if not rows:
        return []
    headers = ("LATENCY (US)", "N", "P50", "P90", "P99", "MAX")
    return ["", *table(headers, rows, right=range(1, 6))]


def text(e: Record) -> str:
    """The report: settings and machine, the table, latency, warnings, a chart."""
    out = [*_wrapped(settings_line(e)), *_wrapped(machine_line(e.get("machine", {})))]
    out += ["", *case_table(e), *latency_table(e)]
    if e.get("error"):
        out += ["", *_wrapped(f"error: {e['error']}")]
    for w in e.get("warnings", []):
        out += _wrapped(f"warning: {w}")
    chart = chart_text(e)
    if chart:
        out += ["", *chart.splitlines()]
    out.append("")
    out.append("±% = min-max spread of the runs over their median; VS BEST = median rate over")
    out.append("the best of its column ± both spreads; n.s. = within the noise (ranges overlap)")
    return "\n".join(_fit(line) for line in out)


def _fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def chart_text(e: Record) -> str:
    cases = [c for c in e.get("cases", []) if c.get("rate_median") is not None]
    if not cases:
        return ""
    if not _grid(e):
        items = [(c["case"], float(c["rate_median"]), _pct(c.get("lost_pct"))) for c in cases]
        return charts.bars("rate, increments/s (median)", items, side_title="lost %")
    xs, names, key = _axis(e)
    rate = [charts.Series(n, _points(cases, n, key, xs, "rate_median")) for n in names]
    parts = [charts.lines(f"rate, increments/s, against {key}", rate, _ticks(xs))]
    if any((c.get("lost_pct") or 0) > 0 for c in cases):
        lost = [charts.Series(n, _points(cases, n, key, xs, "lost_pct")) for n in names]
        parts.append(
            charts.lines(
                f"lost %, against {key}", lost, _ticks(xs), height=6, ylog=False, yfmt=_pct
            )
        )
    return "\n\n".join(parts)


def _axis(e: Record) -> tuple[list[str], list[str], str]:
    s = e.get("settings", {})
    if s.get("sweep_key"):
        key, xs = s["sweep_key"], [str(v) for v in s.get("sweep_values", [])]
    else:
        key, xs = "counters", [str(n) for n in s.get("counters", [])]
    names: list[str] = []
    for c in e.get("cases", []):
        if c["case"] not in names:
            names.append(c["case"])
    if s.get("sweep_key") and len(s.get("counters") or []) > 1:
        names = [f"{n} n={k}" for n in names for k in s["counters"]]
    return xs, names, key


def _points(
    cases: Sequence[Record], name: str, key: str, xs: list[str], field: str
) -> list[tuple[float, float]]:
    out = []
    for c in cases:
        x = str(c["sweep_value"] if key != "counters" else c["counters"])
        own = (
            c["case"]
            if key == "counters" or " n=" not in name
            else f"{c['case']} n={c['counters']}"
        )
        if own == name and x in xs and c.get(field) is not None:
            out.append((float(xs.index(x)), float(c[field])))
    return out


def _ticks(xs: list[str]) -> list[tuple[float, str]]:
    return [(float(i), x) for i, x in enumerate(xs)]


def markdown(e: Record) -> str:
    headers = ["case", "N", "rate/s (median)", "min-max", "lost %", "corrupt %"]
    headers += ["p50 us", "p90 us", "p99 us", "max us", "CPU us/inc", "vs best"]
    out = [f"*{settings_line(e)}*", "", f"*{machine_line(e.get('machine', {}))}*", ""]
    out.append("| " + " | ".join(headers) + " |")
    out.append("|" + "|".join("---" if i == 0 else "--:" for i in range(len(headers))) + "|")
    for c in e.get("cases", []):
        cells = [
            label(c, True),
            str(c["counters"]),
            humane.number(c.get("rate_median")),
            f"{humane.number(c.get('rate_min'))}-{humane.number(c.get('rate_max'))}",
            _pct(c.get("lost_pct")),
            _pct(c.get("corrupt_pct")),
            *(humane.number(c.get(f"latency_{q}_us")) for q in ("p50", "p90", "p99", "max")),
            humane.number(c.get("cpu_us_per_inc")),
            versus(c),
        ]
        out.append("| " + " | ".join(cells) + " |")
    if e.get("warnings"):
        out += ["", *(f"> warning: {w}  " for w in e["warnings"])]
    return "\n".join(out)


def _cell(value: Any) -> Any:
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return "" if value is None else value


def csv_text(rows: Sequence[Record], keys: Sequence[str], kind: str | None = None) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow((["kind"] if kind else []) + list(keys))
    for r in rows:
        writer.writerow(([kind] if kind else []) + [_cell(r.get(k)) for k in keys])
    return buf.getvalue().rstrip("\n")


def cases_csv(e: Record) -> str:
    return csv_text(e.get("cases", []), CASE_KEYS)


def experiment_csv(e: Record) -> str:
    """One row per run, then one per case, in one table (``kind`` says which)."""
    keys = list(dict.fromkeys([*RUN_KEYS, *CASE_KEYS]))
    runs = csv_text(e.get("runs", []), keys, "run")
    cases = csv_text(e.get("cases", []), keys, "case").split("\n", 1)
    return runs + ("\n" + cases[1] if len(cases) > 1 else "")


def experiments_table(items: Sequence[Record]) -> str:
    headers: tuple[str, ...] = ("ID", "STATE", "CREATED", "RUNS", "COUNTERS", "CASES")
    owners = len({x.get("owner") for x in items}) > 1  # a shared host: say whose each is
    if owners:
        headers += ("OWNER",)
    rows = []
    for x in items:
        counters = ",".join(map(str, x.get("counters") or []))
        cases = ", ".join(x.get("cases") or [])
        if x.get("sweep_key"):
            cases += f" (sweep {x['sweep_key']})"
        rows.append(
            [
                f"e{x['id']}",
                str(x["state"]),
                humane.clock(x.get("created_at"))[5:16],
                f"{x.get('runs_done', 0)}/{x.get('runs', 0)}",
                counters[:8],
                cases[: 24 if owners else 34],
                *([str(x.get("owner") or humane.MISSING)[:10]] if owners else []),
            ]
        )
    if not rows:
        return "no experiments yet (run one: labctl compare)"
    return "\n".join(table(headers, rows, right=(3,)))


def history_table(rows: Sequence[Record]) -> str:
    headers = ("ID", "MECHANISM", "N", "STATE", "RAN", "VALUE", "ATTEMPTED", "LOST", "NAME")
    out = []
    for r in rows:
        out.append(
            [
                str(r["id"]),
                str(r["mechanism"])[:10],
                str(r["counters"]),
                str(r["state"]),
                humane.duration(r.get("duration_s")),
                humane.count(r.get("value")),
                humane.count(r.get("attempted")),
                humane.count(r.get("lost")),
                str(r.get("name") or "")[:20],
            ]
        )
    if not out:
        return "no finished sets yet"
    return "\n".join(_fit(line) for line in table(headers, out, right=(0, 2, 5, 6, 7)))
