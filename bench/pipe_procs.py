"""Where does a labd pipe set spend its time? Each process of a set, measured from
outside through /proc, against the bare loop of bench/overhead.py run beside it.

For the window of every run it reads, per process (all threads):

    messages      the counters' write system calls (/proc/PID/io ``syscw``): a counter
                  writes each message with one ``write`` (multiprocessing's framing and
                  a 44-byte frame, far under PIPE_BUF) and nothing else while it counts,
                  so the rate needs nothing from labd (its sampler, its API)
    cpu/msg       user + system time of the role's processes per message, in us; and
                  each apart (user/msg, sys/msg: sampled at the clock's ticks)
    vol, inv      voluntary (it blocked) and involuntary (it was preempted) context
                  switches per second
    migrations    moves between CPUs per second (/proc/PID/task/TID/sched, where the
                  kernel has it; 0 where not)
    minflt        minor page faults per second

Variants (``--variants``, bare and any of the others):

    bare      overhead.py's loop, forked by a forkserver of this script
    labd      a pipe set of a private labd (PipeMessages' counter and printer)
    barecode  a set of the same labd whose counters and printer run the bare loop's
              code (bench/barepipe.py, loaded as an extra mechanism): what a labd set
              costs apart from its code

Each round runs every variant once, in a shuffled order; per figure, the median over
the rounds and, for each variant, the median of variant / bare (and barecode / labd)
with the sign test's interval (bench/pairstats.py).

    python bench/pipe_procs.py [--variants bare,labd,barecode] [--counters N]
                               [--rounds N] [--seconds S] [--warmup S] [--preload]
                               [--seed N] [--json]

Like overhead.py, this module is re-imported by every forkserver child: standard
library (and overhead.py's stdlib-only top) at the top, labd imported where needed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchlib import forkserver, machine, shuffled_rounds
from overhead import Labd, _until_counting, bare_pipe_counter, bare_pipe_printer
from pairstats import median_ci

VARIANTS = ("bare", "labd", "barecode")
MECHANISM = {"labd": "pipe", "barecode": "barepipe"}
HERE = os.path.dirname(os.path.abspath(__file__))
#: the private labd also loads bench/barepipe.py, for the barecode variant
PLUGIN_ENV = {
    "PYTHONPATH": os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH", "")])),
    "LABD_EXTRA_MECHANISMS": "barepipe=barepipe:BarePipe",
}
ROLES = ("counter", "printer")
TICK = os.sysconf("SC_CLK_TCK")


def _write_calls(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("syscw:"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/io has no syscw")


def _stat(pid: int) -> tuple[float, float, int]:
    """User and system CPU time of a process (all its threads), in seconds, and its
    minor page faults, from one read of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK, int(fields[7])  # utime, stime


def _threads(pid: int) -> dict[str, int]:
    """Summed over the process's threads: context switches (/proc/PID/task/TID/status)
    and, where the kernel keeps /proc/PID/task/TID/sched, migrations between CPUs."""
    out = dict.fromkeys(("vol", "inv", "migrations"), 0)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out["vol"] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        out["inv"] += int(line.split()[1])
            with open(f"/proc/{pid}/task/{tid}/sched") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() in _SCHED:
                        out[_SCHED[key.strip()]] += int(float(value))
        except OSError:
            continue  # a thread that just ended (or no sched file)
    return out


_SCHED = {"se.nr_migrations": "migrations"}
_COUNTS = ("vol", "inv", "migrations", "minflt")


def _snapshot(roles: dict[str, list[int]]) -> tuple[float, int, dict[str, list[float]]]:
    t = time.monotonic()
    sent = sum(_write_calls(p) for p in roles["counter"])
    per: dict[str, list[float]] = {}
    for role, pids in roles.items():
        threads = [_threads(p) for p in pids]
        stats = [_stat(p) for p in pids]
        for counts, (_, _, minflt) in zip(threads, stats, strict=True):
            counts["minflt"] = minflt
        per[role] = [sum(u for u, _, _ in stats), sum(k for _, k, _ in stats)]
        per[role] += [sum(counts[k] for counts in threads) for k in _COUNTS]
    return t, sent, per


def measure(roles: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """One window over the set whose processes are ``roles``: its figures."""
    t0, m0, a = _snapshot(roles)
    time.sleep(seconds)
    t1, m1, b = _snapshot(roles)
    span, msgs = t1 - t0, m1 - m0
    if msgs <= 0:
        raise RuntimeError("the counters wrote nothing in the window")
    out = {"rate": msgs / span}
    for role in roles:
        user, system, *counts = (y - x for x, y in zip(a[role], b[role], strict=True))
        out[f"{role}_cpu_us_per_msg"] = (user + system) / msgs * 1e6
        out[f"{role}_user_us_per_msg"] = user / msgs * 1e6
        out[f"{role}_sys_us_per_msg"] = system / msgs * 1e6
        for key, n in zip(_COUNTS, counts, strict=True):
            out[f"{role}_{key}_per_s"] = n / span
    return out


Measure = Callable[[dict[str, list[int]], float], dict[str, float]]


class Bench:
    """The forkserver for the bare loop, the private labd, and one run of each;
    ``measure`` takes each window's figures (pipe_profile.py profiles it too)."""

    def __init__(self, ctx: Any, counters: int, measure: Measure = measure) -> None:
        self.ctx = ctx
        self.counters = counters
        self.measure = measure
        self.labd: Labd | None = None

    def run(self, variant: str, seconds: float, warmup: float) -> dict[str, float]:
        if variant == "bare":
            return self.bare_run(warmup, seconds)
        return self.labd_run(MECHANISM[variant], warmup, seconds)

    def bare_run(self, warmup: float, seconds: float) -> dict[str, float]:
        ctx, n = self.ctx, self.counters
        stop, out, received = ctx.RawValue("i", 0), ctx.RawArray("q", n), ctx.RawValue("q", -1)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        printer = ctx.Process(target=bare_pipe_printer, args=(tuple(r for r, _ in pipes), received))
        counters = [
            ctx.Process(target=bare_pipe_counter, args=(stop, out, i, w))
            for i, (_, w) in enumerate(pipes)
        ]
        procs = [printer, *counters]
        for p in procs:
            p.start()
        for pair in pipes:
            for end in pair:
                end.close()  # the printer sees EOF once the counters exit
        try:
            _until_counting(out, time.monotonic() + 30.0)
            time.sleep(warmup)
            return self.measure(
                {"counter": [p.pid for p in counters], "printer": [printer.pid]}, seconds
            )
        finally:
            stop.value = 1
            for p in [*counters, printer]:
                p.join(10)
                if p.exitcode is None:
                    p.kill()
                    p.join()

    def labd_run(self, mechanism: str, warmup: float, seconds: float) -> dict[str, float]:
        if self.labd is None:
            self.labd = Labd()
            self.labd.start(new_session=False, env=PLUGIN_ENV)
        conn = self.labd.conn
        status = json.loads(conn.root.spawn(mechanism, self.counters, '{"interval": "0.0"}'))
        set_id = int(status["id"])
        roles: dict[str, list[int]] = {role: [] for role in ROLES}
        for p in status["processes"]:
            roles["counter" if p["role"] == "counter" else "printer"].append(int(p["pid"]))
        try:
            self.labd.until_counting(set_id)
            time.sleep(warmup)
            return self.measure(roles, seconds)
        finally:
            final = json.loads(conn.root.stop((set_id,)))[0]
            if final["state"] != "stopped":
                raise RuntimeError(f"labd set {set_id} ended {final['state']}")

    def close(self) -> list[str]:
        return self.labd.close() if self.labd is not None else []


def _ratio(over: list[dict[str, float]], under: list[dict[str, float]], key: str) -> Any:
    paired = [b[key] / a[key] for a, b in zip(under, over, strict=True) if a[key]]
    if not paired:
        return None
    low, high, _ = median_ci(paired)
    return {"median": statistics.median(paired), "low": low, "high": high}


def report(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    keys = list(runs["bare"][0])
    medians = {v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in runs.items()}
    pairs = [(v, "bare") for v in runs if v != "bare"]
    if "barecode" in runs and "labd" in runs:
        pairs.append(("barecode", "labd"))
    ratios = {f"{a}/{b}": {k: _ratio(runs[a], runs[b], k) for k in keys} for a, b in pairs}
    return {"medians": medians, "ratios": ratios}


def render(summary: dict[str, Any], rounds: int) -> str:
    variants = list(summary["medians"])
    lines = [f"{'median of ' + str(rounds) + ' rounds':26}" + "".join(f"{v:>10}" for v in variants)]
    for k in summary["medians"]["bare"]:
        lines.append(f"{k:26}" + "".join(f"{summary['medians'][v][k]:10.4g}" for v in variants))
    for name, by_key in summary["ratios"].items():
        lines.append("")
        lines.append(f"{name} (interval, paired by round)")
        for k, r in by_key.items():
            text = f"{r['median']:.3f} ({r['low']:.3f}-{r['high']:.3f})" if r else "-"
            lines.append(f"  {k:24} {text}")
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="bare,labd", help="bare,labd,barecode (bare,labd)")
    ap.add_argument("--counters", type=int, default=1, help="counters per set (1)")
    ap.add_argument("--rounds", type=int, default=20, help="pairs of runs (20)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured window (3)")
    ap.add_argument("--warmup", type=float, default=1.0, help="discarded start (1)")
    ap.add_argument("--preload", action="store_true", help="labd's forkserver preload")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 32), help="of the order")
    args = ap.parse_args(argv)
    if args.counters < 1 or args.rounds < 1 or args.seconds <= 0:
        ap.error("--counters and --rounds at least 1, --seconds above 0")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if "bare" not in args.variants or not set(args.variants) <= set(VARIANTS):
        ap.error(f"--variants: bare and some of {', '.join(VARIANTS[1:])}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    bench = Bench(forkserver(args.preload), args.counters)
    started = time.monotonic()
    try:
        runs = shuffled_rounds(
            lambda v: bench.run(v, args.seconds, args.warmup),
            args.variants,
            args.rounds,
            args.seed,
            lambda figures: figures["rate"],
        )
    finally:
        left = bench.close()
    summary = report(runs)
    if args.json:
        doc = {"machine": machine(), "settings": vars(args), "runs": runs, **summary}
        print(json.dumps({**doc, "leftover_processes": left}, indent=1))
    else:
        print(render(summary, args.rounds))
        print(f"elapsed {time.monotonic() - started:.0f} s; leftover processes: {left or 'none'}")
    return 2 if left else 0


if __name__ == "__main__":
    sys.exit(main())
