"""Does ``labctl compare`` measure what a hand-written loop measures?

For each of the lesson's six cases at 1 and 4 counters, flat out, this alternates a
run of the bare multiprocessing loop of ``bench/overhead.py`` with a one-run
``labctl compare CASE --counters N --repeat 1 --json`` against a private labd, and
prints ``ratio = compare's median rate / the bare loop's median rate`` per case
(target: 0.95 to 1.05).

    python bench/compare_check.py [--seconds S] [--warmup S] [--repeat N]
                                  [--only MECH] [--counters 1,4] [--json]

Like overhead.py, this module is re-imported by every forkserver child, so it imports
only the standard library (and overhead.py's stdlib-only top) at the top.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchlib import PrivateLabd, machine, script
from overhead import BareRunner, Case, Labd, fmt_rate, own_leftovers, select_cases

LOW, HIGH = 0.95, 1.05
SESSION_FLAG = "IPCLAB_BENCH_OWN_SESSION"
ROTATIONS = (("bare", "labd", "compare"), ("compare", "bare", "labd"), ("labd", "compare", "bare"))


def case_arg(case: Case) -> str:
    return f"{case.mechanism}:lock=yes" if case.lock else case.mechanism


def compare_run(labd: PrivateLabd, case: Case, warmup: float, seconds: float) -> float:
    """One run through ``labctl compare``: its measured rate."""
    command = [script("labctl"), "--connect", f"unix:{labd.socket}", "compare", case_arg(case)]
    command += ["--counters", str(case.counters), "--repeat", "1", "--interval", "0"]
    command += ["--seconds", str(seconds), "--warmup", str(warmup), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"labctl compare {case.label}: {done.stderr.strip()}")
    result = json.loads(done.stdout)["cases"][0]
    return float(result["rate_median"])


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--seconds", type=float, default=1.5, help="measured window (1.5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="discarded start (0.5)")
    ap.add_argument("--repeat", type=int, default=3, help="bare/compare pairs per case (3)")
    ap.add_argument("--only", action="append", default=[], metavar="MECH")
    ap.add_argument("--counters", default="1,4", help="comma-separated (1,4)")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    args = ap.parse_args(argv)
    if args.seconds < 0.2 or args.warmup < 0 or args.repeat < 1:
        ap.error("--seconds must be >= 0.2, --warmup >= 0, --repeat >= 1")
    args.cases = select_cases(args.only, [int(x) for x in args.counters.split(",") if x])
    return args


def measure(args: argparse.Namespace, say: Any) -> list[dict[str, Any]]:
    """Per case, ``--repeat`` rounds of: the bare loop, overhead.py's own measurement of
    a labd set (sampler figures polled over the rpyc API), and ``labctl compare``;
    rotating which goes first, so a drift of the machine hits all three alike."""
    bare = BareRunner(multiprocessing.get_context("forkserver"))
    labd = Labd()
    out: list[dict[str, Any]] = []
    try:
        labd.start()
        for case in args.cases:
            rates: dict[str, list[float]] = {"bare": [], "labd": [], "compare": []}
            for rep in range(args.repeat):
                for who in ROTATIONS[rep % len(ROTATIONS)]:
                    if who == "bare":
                        rate = bare.run(case, args.warmup, args.seconds).rate
                    elif who == "labd":
                        rate = labd.run(case, args.warmup, args.seconds).rate
                    else:
                        rate = compare_run(labd, case, args.warmup, args.seconds)
                    rates[who].append(rate)
            out.append(result(case, rates))
            say(
                f"  {case.label:<17} N={case.counters}: "
                + " | ".join(f"{k} {' '.join(map(fmt_rate, v))}" for k, v in rates.items())
            )
    finally:
        bare.close()
        left = labd.close()
        if left:
            say(f"labd left processes behind: {'; '.join(left)}")
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else float("inf")


def result(case: Case, rates: dict[str, list[float]]) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = _div(med["compare"], med["bare"])
    return {
        "case": case.label,
        "counters": case.counters,
        **rates,
        "ratio": ratio,  # compare / bare: the target
        "ratio_labd": _div(med["compare"], med["labd"]),  # compare / overhead.py's labd
        "labd_over_bare": _div(med["labd"], med["bare"]),
        "ok": LOW <= ratio <= HIGH,
    }


def own_session(argv: Sequence[str] | None) -> int | None:
    """Run this benchmark again in a session of its own, as labd runs in one.

    With the kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``)
    each session shares the CPUs fairly with the others: on a busy host, bare loops run
    in the caller's session (crowded by whatever else it runs) got a third of the rate
    of labd's sets in labd's own session. None once in a session of our own.
    """
    if os.environ.get(SESSION_FLAG) or os.getsid(0) == os.getpid():
        return None
    command = [sys.executable, os.path.abspath(__file__), *(sys.argv[1:] if argv is None else argv)]
    child = subprocess.Popen(command, env={**os.environ, SESSION_FLAG: "1"}, start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()


def main(argv: Sequence[str] | None = None) -> int:
    code = own_session(argv)
    if code is not None:
        return code
    args = parse(argv)
    info = machine()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    say(
        f"labctl compare vs the bare loops of bench/overhead.py, interval=0, forkserver\n"
        f"machine: nproc={info['nproc']} (usable {info['cpus_usable']}), Python "
        f"{info['python']}, {info['platform']}; load at start "
        f"{' '.join(map(str, info['loadavg']))}\nruns: warm-up {args.warmup:g} s + window "
        f"{args.seconds:g} s, {args.repeat} pair(s) per case, alternating; target "
        f"{LOW}-{HIGH}\n"
    )
    started = time.monotonic()
    results = measure(args, say)
    left = own_leftovers()
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps({"machine": info, "results": results, "leftovers": left}, indent=2))
    else:
        head = f"{'case':<17} {'N':>2} {'bare':>8} {'labd':>8} {'compare':>8}"
        print(f"\n{head} {'cmp/bare':>8} {'cmp/labd':>8} {'labd/bare':>9}  ok")
        for r in results:
            meds = [fmt_rate(statistics.median(r[k])) for k in ("bare", "labd", "compare")]
            print(
                f"{r['case']:<17} {r['counters']:>2} {meds[0]:>8} {meds[1]:>8} {meds[2]:>8} "
                f"{r['ratio']:>8.3f} {r['ratio_labd']:>8.3f} {r['labd_over_bare']:>9.3f}  "
                f"{'yes' if r['ok'] else 'NO'}"
            )
        print(
            f"\nload at end: {' '.join(map(str, info['loadavg_end']))}; elapsed "
            f"{time.monotonic() - started:.0f} s; leftover processes: {'; '.join(left) or 'none'}"
        )
    if left:
        return 2
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
