"""Does ``labctl compare`` measure what a hand-written loop measures?

For each of the lesson's six cases at 1 and 4 counters, flat out, this runs ``--repeat``
pairs of measurements: the bare multiprocessing loop of ``bench/overhead.py`` and a
one-run ``labctl compare CASE --counters N --repeat 1 --json`` against a private labd,
one right after the other (which goes first is balanced and shuffled), every case's
first pair before any case's second. Per case it reports the median of the pairs'
ratios ``compare / bare`` with a distribution-free confidence interval (the sign
test's, bench/pairstats.py), and a verdict against the target 0.95 to 1.05: "within"
when the interval lies inside it, "OUTSIDE" when it lies outside, "undecided (noise)"
otherwise, with an estimate of how many pairs would decide it. The target is per
mechanism: each mechanism's row pools the pairs of its cases (lock or not, 1 or 4
counters), and those rows give the exit code (0 within, 1 outside, 3 undecided, 2 a
process left behind), except that a case outside on its own makes it 1 as well.

    python bench/compare_check.py [--seconds S] [--warmup S] [--repeat N] [--seed N]
                                  [--only MECH] [--counters 1,4] [--json]
    python bench/compare_check.py --from RUN.json [--from RUN2.json ...] [--only MECH]

On a noisy host one run's pairs rarely decide; runs saved with ``--json`` (at any
hour) are pairs all the same, and ``--from`` judges them pooled.

Like overhead.py, this module is re-imported by every forkserver child, so it imports
only the standard library (and overhead.py's stdlib-only top) at the top.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchlib import forkserver, machine, own_session, script
from overhead import ALL_CASES, BareRunner, Case, Labd, fmt_rate, own_leftovers, select_cases
from pairstats import (
    LEVEL,
    OUTSIDE,
    UNDECIDED,
    add_options,
    median_ci,
    pairs_needed,
    schedule,
    within_verdict,
)

LOW, HIGH = 0.95, 1.05
SESSION_FLAG = "IPCLAB_BENCH_OWN_SESSION"


def case_arg(case: Case) -> str:
    return f"{case.mechanism}:lock=yes" if case.lock else case.mechanism


def compare_run(labd: Labd, case: Case, warmup: float, seconds: float) -> tuple[float, float]:
    """One run through ``labctl compare``: the rate labd measured in its window (the
    client's own start and the set's start lie outside it) and the CPU microseconds per
    increment of the set's processes (and of the Manager server) over it."""
    command = [script("labctl"), "--connect", f"unix:{labd.socket}", "compare", case_arg(case)]
    command += ["--counters", str(case.counters), "--repeat", "1", "--interval", "0"]
    command += ["--seconds", str(seconds), "--warmup", str(warmup), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"labctl compare {case.label}: {done.stderr.strip()}")
    result = json.loads(done.stdout)["cases"][0]
    return float(result["rate_median"]), float(result["cpu_us_per_inc"] or 0.0)


# --- the pairs' figures ----------------------------------------------------------------


def _ratios(pairs: Sequence[dict[str, Any]], key: str) -> list[float]:
    """compare / bare of ``key`` in each pair."""
    return [p["compare" + key] / p["bare" + key] if p["bare" + key] else math.inf for p in pairs]


def result(
    label: str,
    mechanism: str | None,
    counters: int | None,
    pairs: list[dict[str, Any]],
    kind: str = "case",
) -> dict[str, Any]:
    """The figures of some pairs: one case's (``kind`` "case"), one mechanism's pooled
    over its cases ("mechanism": the issue's target is per mechanism), or all ("all")."""
    ratios = _ratios(pairs, "")
    low, high, cover = median_ci(ratios)
    target = (LOW, HIGH)
    judged = within_verdict(low, high, target) if cover >= LEVEL else UNDECIDED  # < 6 pairs
    cpu = _ratios(pairs, "_cpu_us")
    needed = None if judged != UNDECIDED else pairs_needed(ratios, len(ratios), LOW, HIGH)
    return {
        "kind": kind,
        "case": label,
        "mechanism": mechanism,
        "counters": counters,
        "n": len(pairs),
        "pairs": pairs if kind == "case" else [],  # pooled: see each case's
        "bare_median": statistics.median(p["bare"] for p in pairs),
        "compare_median": statistics.median(p["compare"] for p in pairs),
        "cpu_ratios": cpu,  # compare's CPU per increment over the bare loop's
        "cpu_ratio_median": statistics.median(cpu),
        "cpu_ci": list(median_ci(cpu)[:2]),
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "ci": [low, high],
        "ci_coverage": round(cover, 4),
        "verdict": judged,
        "pairs_needed": needed,
    }


def summarize(pairs: dict[Case, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each case's row, then each mechanism's pooled over its cases (where it has more
    than one), then all pairs pooled (where there is more than one mechanism)."""
    cases = [case for case in pairs if pairs[case]]
    out = [result(case.label, case.mechanism, case.counters, pairs[case]) for case in cases]
    mechanisms = dict.fromkeys(case.mechanism for case in cases)
    for mech in mechanisms:
        mine = [case for case in cases if case.mechanism == mech]
        if len(mine) > 1:
            pooled = [p for case in mine for p in pairs[case]]
            label = f"{mech} (its {len(mine)} cases)"
            out.append(result(label, mech, None, pooled, "mechanism"))
    if len(mechanisms) > 1:
        out.append(result("all pairs", None, None, [p for c in cases for p in pairs[c]], "all"))
    return out


def judged_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the exit code and the verdict speak for: one per mechanism (its pooled
    row, or its one case's)."""
    pooled = {r["mechanism"] for r in results if r["kind"] == "mechanism"}
    return [
        r
        for r in results
        if r["kind"] == "mechanism" or (r["kind"] == "case" and r["mechanism"] not in pooled)
    ]


def load_pairs(files: Sequence[str]) -> dict[Case, list[dict[str, Any]]]:
    """The pairs of earlier ``--json`` runs, by case (runs of other cases add up)."""
    by_label = {(c.label, c.counters): c for c in ALL_CASES}
    pairs: dict[Case, list[dict[str, Any]]] = {}
    for name in files:
        with open(name) as f:
            doc = json.load(f)
        for r in doc["results"]:
            if r.get("kind", "case") == "case" and r["counters"] is not None:
                pairs.setdefault(by_label[r["case"], r["counters"]], []).extend(r["pairs"])
    return pairs


# --- running ----------------------------------------------------------------------------


def measure(
    args: argparse.Namespace, say: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[float]]:
    """Every pair of the schedule; per case its result, and the 1-minute load average
    before each pair. labd runs in this process's session, as the bare loops do."""
    bare = BareRunner(forkserver(args.preload))  # preloading what labd's does, if asked
    labd = Labd()
    pairs: dict[Case, list[dict[str, Any]]] = {case: [] for case in args.cases}
    loads: list[float] = []
    plan = schedule(args.cases, args.repeat, random.Random(args.seed), ("bare", "compare"))
    try:
        labd.start(new_session=False)
        for i, (case, first) in enumerate(plan, 1):
            loads.append(round(os.getloadavg()[0], 2))
            rates: dict[str, float] = {}
            for who in (first, "compare" if first == "bare" else "bare"):
                if who == "bare":
                    run = bare.run(case, args.warmup, args.seconds)
                    rates.update(bare=run.rate, bare_cpu_us=run.cpu_us_per_inc(server=True))
                else:
                    rate, cpu = compare_run(labd, case, args.warmup, args.seconds)
                    rates.update(compare=rate, compare_cpu_us=cpu)
            pairs[case].append({**rates, "first": first, "load": loads[-1]})
            say(
                f"  {i:>3}/{len(plan)} {case.label:<17} N={case.counters}: bare "
                f"{fmt_rate(rates['bare']):>7} compare {fmt_rate(rates['compare']):>7} "
                f"-> {rates['compare'] / rates['bare'] if rates['bare'] else math.inf:.3f} "
                f"({first} first, load {loads[-1]:g})"
            )
    finally:
        bare.close()
        left = labd.close()
        if left:
            say(f"labd left processes behind: {'; '.join(left)}")
    return summarize(pairs), loads


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=1.0, help="measured window (1.0)")
    ap.add_argument("--warmup", type=float, default=0.5, help="discarded start (0.5)")
    ap.add_argument("--repeat", type=int, default=6, help="bare/compare pairs per case (6)")
    ap.add_argument("--only", action="append", default=[], metavar="MECH")
    ap.add_argument("--counters", default="1,4", help="comma-separated (1,4)")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    ap.add_argument(
        "--preload", action="store_true", help="the bare loop's forkserver preloads labd's modules"
    )
    add_options(ap)
    args = ap.parse_args(argv)
    if args.seconds < 0.2 or args.warmup < 0 or args.repeat < 2:
        ap.error("--seconds must be >= 0.2, --warmup >= 0, --repeat >= 2")
    args.cases = select_cases(args.only, [int(x) for x in args.counters.split(",") if x])
    if not args.cases and not args.sources:
        ap.error("nothing selected")
    return args


def render(results: list[dict[str, Any]]) -> str:
    head = f"{'case':<21} {'N':>2} {'bare':>8} {'compare':>8} {'ratio':>6} {'95% CI':>13}"
    lines = [f"{head} {'cover':>5} {'cpu/inc':>7}  verdict (pairs it would take)"]
    for r in results:
        low, high = r["ci"]
        note = r["verdict"]
        if r["verdict"] == UNDECIDED:
            need = r["pairs_needed"]
            note += f" (~{need})" if need is not None else " (median on a bound)"
        lines.append(
            f"{r['case']:<21} {r['counters'] or '':>2} {fmt_rate(r['bare_median']):>8} "
            f"{fmt_rate(r['compare_median']):>8} {r['ratio_median']:>6.3f} "
            f"{low:>6.3f}-{high:<6.3f} {100 * r['ci_coverage']:>4.1f}% "
            f"{r['cpu_ratio_median']:>7.3f}  {note}"
        )
    return "\n".join(lines)


def footer(
    results: list[dict[str, Any]], info: dict[str, Any], elapsed: float, left: list[str]
) -> str:
    """What the table's columns are, the load and the leftovers, under the table."""
    low, high = info["load_during"] or ["-", "-"]
    text = (
        "ratio = median over the pairs of compare / bare (each pair ran side by side);"
        "\n95% CI = the sign test's interval for that median (cover = its coverage)"
        "\ncpu/inc = median over the pairs of compare / bare of CPU us per increment"
        "\n  (the set's processes, the Manager server included); a mechanism's row pools"
        "\n  its cases' pairs (the target is per mechanism: its verdict is the exit code's,"
        "\n  unless one of its cases alone is OUTSIDE)"
        f"\nload (1 min) at start {info['loadavg'][0]}, during {low}-{high}, at end "
        f"{info['loadavg_end'][0]}; elapsed {elapsed:.0f} s; "
        f"leftover processes: {'; '.join(left) or 'none'}"
    )
    judged = judged_rows(results)
    if len(judged) > 1 and any(r["verdict"] != UNDECIDED for r in judged):
        text += (
            f"\nnote: each interval misses the true median in up to {1 - LEVEL:.0%} of runs;"
            f" over {len(judged)} mechanisms some verdict may be chance: confirm it with"
            " --only MECH --repeat 20, or pool runs with --from"
        )
    return text


def _print(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    code = own_session(os.path.abspath(__file__), SESSION_FLAG)
    if code is not None:
        return code
    args = parse(argv)
    if args.sources:
        return judge_saved(args)
    info = machine()
    say: Callable[[str], None] = (lambda _: None) if args.json else _print
    say(
        f"labctl compare vs the bare loops of bench/overhead.py, interval=0, forkserver\n"
        f"machine: nproc={info['nproc']} (usable {info['cpus_usable']}), Python "
        f"{info['python']}, {info['platform']}; load at start "
        f"{' '.join(map(str, info['loadavg']))}\nruns: warm-up {args.warmup:g} s (from "
        f"when every counter counts) + window {args.seconds:g} s; {args.repeat} pairs per "
        f"case, side by side; seed {args.seed}; target {LOW}-{HIGH}\n"
    )
    started = time.monotonic()
    results, loads = measure(args, say)
    left = own_leftovers()
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    info["load_during"] = [min(loads), max(loads)] if loads else []
    elapsed = round(time.monotonic() - started, 1)
    if args.json:
        settings = {k: getattr(args, k) for k in ("seconds", "warmup", "repeat", "seed", "preload")}
        doc = {"machine": info, "settings": settings, "target": [LOW, HIGH], "results": results}
        print(json.dumps({**doc, "elapsed_s": elapsed, "leftovers": left}, indent=2))
    else:
        print(f"\n{render(results)}\n\n{footer(results, info, elapsed, left)}")
    if left:
        return 2
    return exit_code(results)


def exit_code(results: Sequence[dict[str, Any]]) -> int:
    """0: every mechanism within the target; 1: one outside, or one of its cases (a
    pooled row can hide a case that is clearly off: the Manager at 4 counters measured
    0.84, 0.79-0.93, under a pooled 0.95); 3: one undecided."""
    verdicts = {r["verdict"] for r in judged_rows(results)}
    if OUTSIDE in verdicts or any(r["verdict"] == OUTSIDE for r in results if r["kind"] == "case"):
        return 1
    return 3 if UNDECIDED in verdicts else 0


def judge_saved(args: argparse.Namespace) -> int:
    """``--from``: the pairs of earlier runs (of the selected cases), judged together."""
    try:
        saved = load_pairs(args.sources)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"compare_check.py: --from: {e}")
    wanted = set(args.cases)
    results = summarize({case: saved[case] for case in saved if case in wanted})
    if not results:
        sys.exit("compare_check.py: --from: no pairs of the selected cases")
    if args.json:
        doc = {"sources": args.sources, "target": [LOW, HIGH], "results": results}
        print(json.dumps(doc, indent=2))
    else:
        print(f"pairs of {', '.join(args.sources)}\n\n{render(results)}")
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
