"""Where, function by function, does a labd pipe set spend its CPU beside the bare loop?
``pipe_procs.py``'s runs, each window also profiled by ``perf record -e cpu-clock -g``
on each role's processes (user and kernel functions alike), then per function the
samples per million messages of each variant, summed over the rounds, and the
differences, largest first.

    python bench/pipe_profile.py [--counters N] [--rounds N] [--seconds S] [--seed N]
                                 [--top N] [--role counter|printer] [--keep DIR]

Needs ``perf`` (Debian: linux-perf) and the right to profile the processes (root, or
``kernel.perf_event_paranoid`` <= 1). The profiler costs the sets CPU, so the rates of
these runs are not the sets' rates: compare functions, and take rates from
``pipe_procs.py``. Hardware counters (cycles, instructions) are not needed: a VM
often has none.

Like overhead.py, this module is re-imported by every forkserver child: standard
library at the top, the rest imported where needed.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

RECORD = ("perf", "record", "-q", "-e", "cpu-clock", "-F", "2999", "-g")
REPORT = ("perf", "report", "--no-children", "--sort", "dso,sym", "--stdio", "-g", "none", "-n")
_LINE = re.compile(r"\s+[\d.]+%\s+(\d+)\s+\S+\s+\[.\]\s+(.*)")


class Profiled:
    """A window's ``measure`` (pipe_procs') with each role's processes profiled: the
    profiles go to ``out`` as TAG-ROLE.data; ``last`` is the last window's tag and how
    long its profilers ran (they span the window and their own start)."""

    def __init__(self, out: str, measure: Callable[..., dict[str, float]]) -> None:
        self.out = out
        self.measure = measure
        self.variant = ""  # set by the caller before each run
        self.numbers = itertools.count(1)
        self.last: tuple[str, float] = ("", 0.0)

    def __call__(self, roles: dict[str, list[int]], seconds: float) -> dict[str, float]:
        tag = f"{self.variant}-{next(self.numbers)}"
        perfs = [
            subprocess.Popen(
                [*RECORD, "-p", ",".join(map(str, pids)), "-o", f"{self.out}/{tag}-{role}.data"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for role, pids in roles.items()
        ]
        started = time.monotonic()
        figures = self.measure(roles, seconds)
        for p in perfs:
            p.send_signal(signal.SIGINT)
        for p in perfs:
            p.wait()
        self.last = (tag, time.monotonic() - started)
        return figures


def samples(path: str) -> collections.Counter[str]:
    """Samples per function (self time) of one profile."""
    report = subprocess.run(
        [*REPORT, "-i", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out: collections.Counter[str] = collections.Counter()
    for line in report.splitlines():
        m = _LINE.match(line)
        if m:
            out[m.group(2).strip()] += int(m.group(1))
    return out


Run = tuple[str, float, float]  # the profiles' tag, how long they ran, the set's rate


def table(runs: dict[str, list[Run]], out: str, role: str, top: int) -> str:
    per: dict[str, dict[str, float]] = {}
    for variant, figures in runs.items():
        total: collections.Counter[str] = collections.Counter()
        messages = 0.0
        for tag, profiled_s, rate in figures:
            total.update(samples(f"{out}/{tag}-{role}.data"))
            messages += rate * profiled_s
        total["(all)"] = sum(total.values())
        per[variant] = {k: n / messages * 1e6 for k, n in total.items()}
    names = sorted((set(per["bare"]) | set(per["labd"])) - {"(all)"})
    names.sort(key=lambda k: per["labd"].get(k, 0.0) - per["bare"].get(k, 0.0))
    shown = ["(all)", *names[::-1][:top], "...", *names[:top]]
    lines = [f"{role}: samples per 1M messages{'':14}{'bare':>9}{'labd':>9}{'diff':>9}"]
    for k in shown:
        if k == "...":
            lines.append("...")
            continue
        b, v = per["bare"].get(k, 0.0), per["labd"].get(k, 0.0)
        lines.append(f"{k[:48]:48}{b:9.1f}{v:9.1f}{v - b:9.1f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counters", type=int, default=4, help="counters per set (4)")
    ap.add_argument("--rounds", type=int, default=6, help="runs of each variant (6)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured window (3)")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 32), help="of the order")
    ap.add_argument("--top", type=int, default=20, help="functions shown at each end (20)")
    ap.add_argument("--role", choices=("counter", "printer"), action="append")
    ap.add_argument("--keep", help="keep the profiles in this directory")
    args = ap.parse_args(argv)
    if shutil.which("perf") is None:
        ap.error("needs perf (Debian: apt install linux-perf)")
    import pipe_procs
    from benchlib import forkserver

    out = args.keep or tempfile.mkdtemp(prefix="pipe_profile-")
    os.makedirs(out, exist_ok=True)
    profiled = Profiled(out, pipe_procs.measure)
    bench = pipe_procs.Bench(forkserver(True), args.counters, profiled)
    runs: dict[str, list[Run]] = {"bare": [], "labd": []}
    rng = random.Random(args.seed)
    try:
        for _ in range(args.rounds):
            for variant in rng.sample(list(runs), 2):
                profiled.variant = variant
                rate = bench.run(variant, args.seconds, 1.0)["rate"]
                runs[variant].append((*profiled.last, rate))
    finally:
        left = bench.close()
    for role in args.role or ["counter", "printer"]:
        print(table(runs, out, role, args.top), end="\n\n")
    print(f"seed {args.seed}; profiles in {out if args.keep else '(removed)'}; ", end="")
    print(f"leftover processes: {left or 'none'}")
    if not args.keep:
        shutil.rmtree(out)
    return 2 if left else 0


if __name__ == "__main__":
    sys.exit(main())
