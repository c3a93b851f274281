"""Where did labd's Manager set at 4 counters lose its ~15 %? One ingredient of a labd
set at a time, built by hand beside the bare loop of bench/overhead.py.

Up to round 0.4.2, ``compare_check.py`` and ``overhead.py`` measured the racy Manager
at 4 counters at 0.82-0.86 of the bare loop (CPU per increment 1.17-1.20), where every
other case was within a few %. This script rebuilds a labd set from its parts, outside
labd, to find which part (or which combination) costs it: it found the spawned Manager
server (``host+spawned``), and labd now forks it (bench/README.md, round 0.4.3).
Variants, combined with ``+``:

    bare      overhead.py's loop: forkserver children doing ``v.value += 1`` on one
              Manager Value (the baseline every other variant is divided by)
    labd      a real set of a private labd, as overhead.py runs one (the gap itself)
    host      the Manager server started as labd starts it (labd.manager_host, forked
              by the forkserver)
    spawned   with host: the Manager server spawned, as labd started it up to 0.4.2
    worker    the counters run labd's worker code (labd.worker.process.run: its board,
              stop pipe, watch thread, process group, subreaper)
    launch    the counters are forked by one launcher with os.fork, as labd's are
    printer   a printer process reads the value 10 times a second, as labd's does
    sampler   a thread of this process reads it 10 times a second, as labd's sampler
    preload   (with --preload, for every variant) the forkserver preloads and freezes
              what labd's preloads

Each round runs every variant once, in a shuffled order; per variant, the median over
the rounds of variant / bare with the sign test's interval (bench/pairstats.py).

    python bench/manager_isolate.py [--variants bare,labd,host+worker+launch]
                                    [--rounds N] [--seconds S] [--preload] [--json]

Like overhead.py, this module is re-imported by every forkserver child: standard
library (and overhead.py's stdlib-only top) at the top, labd imported where needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import multiprocessing.context
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib import forkserver, shuffled_rounds
from overhead import Case, Labd, _until_counting, bare_manager
from pairstats import add_options, median_ci

PARTS = ("bare", "labd", "host", "spawned", "worker", "launch", "printer", "sampler")
COUNTERS = 4
TICK_S = 0.1  # labd's printer and sampler read the value 10 times a second


def labd_counter(spec: Any, board: Any, wake: Any, out: Any, v: Any) -> None:
    from labd.mechanisms.manager import ManagerValue
    from labd.worker import process

    process.run(spec, ManagerValue, board, wake, out, (v, None, None))


def printer(stop: Any, v: Any) -> None:
    while not stop.value:
        time.sleep(TICK_S)
        v.value  # noqa: B018 - a read through the proxy, as labd's printer's


def launcher(targets: list[tuple[Callable[..., None], tuple[Any, ...]]]) -> None:
    """Fork each counter with os.fork and run it as multiprocessing runs a Process, as
    labd.worker.launcher does; then wait for them."""
    pids = []
    for target, args in targets:
        worker = multiprocessing.Process(target=target, args=args, daemon=True)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = worker._bootstrap()  # type: ignore[attr-defined]
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)


def counters(
    ctx: Any, targets: list[tuple[Callable[..., None], tuple[Any, ...]]], launch: bool
) -> list[Any]:
    """The counters' processes: one each, or (``launch``) one launcher forking them all."""
    if launch:
        return [ctx.Process(target=launcher, args=(targets,))]
    return [ctx.Process(target=t, args=a) for t, a in targets]


def window(done: Any, warmup: float, seconds: float) -> float:
    """The rate of ``sum(done)`` over ``seconds``, from ``warmup`` after every slot counts."""
    _until_counting(done, time.monotonic() + 30.0)
    time.sleep(warmup)
    a, t0 = sum(done), time.perf_counter()
    time.sleep(seconds)
    b, t1 = sum(done), time.perf_counter()
    return (b - a) / (t1 - t0)


class Bench:
    """The Managers (plain and labd's way), the private labd, and one run of a variant."""

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self.ctx = ctx
        self.managers: dict[str, Any] = {}
        self.hosts: list[Any] = []  # labd.manager_host.ManagerHost: ended by their own shutdown
        self.labd: Labd | None = None
        self.dirs: list[str] = []

    def manager(self, how: str) -> Any:
        """The plain Manager (``bare``), or labd's (``host``: forked by the forkserver, as
        labd.lab starts it; ``spawned``: as labd started it up to 0.4.2)."""
        if how not in self.managers:
            if how == "bare":
                self.managers[how] = self.ctx.Manager()
            else:
                from labd.manager_host import ManagerHost

                logging.getLogger("labd.manager").setLevel(logging.ERROR)  # its end at close
                self.dirs.append(tempfile.mkdtemp(prefix="ipclab-isolate-"))
                where = Path(self.dirs[-1]) / "manager"
                ctx = multiprocessing.get_context("spawn") if how == "spawned" else self.ctx
                self.hosts.append(ManagerHost(where, ctx, lambda _: None))
                self.managers[how] = self.hosts[-1].get()[0]
        return self.managers[how]

    def run(self, variant: str, seconds: float, warmup: float) -> float:
        parts = set(variant.split("+"))
        if "labd" in parts:
            return self.run_labd(seconds, warmup)
        ctx: Any = self.ctx
        how = "bare" if "host" not in parts else "spawned" if "spawned" in parts else "host"
        v = self.manager(how).Value("q", 0)
        stop = ctx.RawValue("i", 0)
        if "worker" in parts:
            from labd.worker import board
            from labd.worker.contexts import WorkerSpec

            out = ctx.RawArray("q", board.size(COUNTERS, 1))
            done = board.view(out)[1 : 2 * COUNTERS : 2]  # each counter's done tally
            wake_r, wake_w = ctx.Pipe(duplex=False)
            lines_r, lines_w = ctx.Pipe(duplex=False)
            values = {"interval": 0.0}
            specs = [
                WorkerSpec(1, "counter", i, COUNTERS, 1, values, os.getpid(), -1)
                for i in range(COUNTERS)
            ]
            targets = [(labd_counter, (spec, out, wake_r, lines_w, v)) for spec in specs]
        else:
            out = done = ctx.RawArray("q", COUNTERS)
            targets = [(bare_manager, (stop, out, i, v, None)) for i in range(COUNTERS)]
        procs = counters(ctx, targets, "launch" in parts)
        if "printer" in parts:
            procs.append(ctx.Process(target=printer, args=(stop, v)))
        sampler = threading.Thread(target=printer, args=(stop, v)) if "sampler" in parts else None
        for p in procs:
            p.start()
        if sampler is not None:
            sampler.start()
        try:
            rate = window(done, warmup, seconds)
        finally:
            stop.value = 1
            if "worker" in parts:
                wake_w.send_bytes(b"stop")
            for p in procs:
                p.join(10)
                if p.exitcode is None:
                    p.kill()
                    p.join()
            if sampler is not None:
                sampler.join()
            if "worker" in parts:
                for end in (wake_r, wake_w, lines_r, lines_w):
                    end.close()
        return rate

    def run_labd(self, seconds: float, warmup: float) -> float:
        if self.labd is None:
            self.labd = Labd()
            self.labd.start(new_session=False)
        return float(self.labd.run(Case("manager", COUNTERS), warmup, seconds).rate)

    def close(self) -> list[str]:
        left = self.labd.close() if self.labd is not None else []
        if "bare" in self.managers:
            self.managers["bare"].shutdown()
        for host in self.hosts:
            host.shutdown()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        return left


def parser(doc: str, variants: str) -> argparse.ArgumentParser:
    """The options every isolate script takes (this one's and pipe_isolate.py's)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--variants", default=variants)
    ap.add_argument("--rounds", type=int, default=16, help="runs of each variant (16)")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured window (3)")
    ap.add_argument("--warmup", type=float, default=0.5, help="discarded start (0.5)")
    ap.add_argument("--preload", action="store_true", help="labd's forkserver preload")
    ap.add_argument("--json", action="store_true", help="one JSON document")
    add_options(ap)
    return ap


def split_variants(
    ap: argparse.ArgumentParser, args: argparse.Namespace, parts: Sequence[str]
) -> None:
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = {p for v in args.variants for p in v.split("+")} - set(parts)
    if unknown or "bare" not in args.variants:
        ap.error(f"--variants: bare and some of {', '.join(parts)} joined with +")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = parser(__doc__, "bare,labd,host+worker+launch+printer+sampler")
    args = ap.parse_args(argv)
    split_variants(ap, args, PARTS)
    if any("spawned" in v.split("+") and "host" not in v.split("+") for v in args.variants):
        ap.error("--variants: spawned goes with host (host+spawned)")
    return args


def run_rounds(bench: Any, args: argparse.Namespace) -> int:
    """Every variant once a round, shuffled; then the report. ``bench`` has run(variant,
    seconds, warmup) -> rate and close() -> what was left running."""
    try:
        rates = shuffled_rounds(
            lambda v: float(bench.run(v, args.seconds, args.warmup)),
            args.variants,
            args.rounds,
            args.seed,
            float,
        )
    finally:
        left = bench.close()
    rows = []
    for variant in (v for v in args.variants if v != "bare"):
        ratios = [x / b for x, b in zip(rates[variant], rates["bare"], strict=True)]
        low, high, cover = median_ci(ratios)
        rows.append(
            {
                "variant": variant,
                "median_rate": statistics.median(rates[variant]),
                "ratio": statistics.median(ratios),
                "ci": [low, high],
                "ci_coverage": round(cover, 4),
            }
        )
    if args.json:
        doc = {"settings": vars(args), "rates": rates, "rows": rows, "leftovers": left}
        print(json.dumps(doc, indent=2))
    else:
        print(f"bare: median {statistics.median(rates['bare']):.0f} increments/s")
        for r in rows:
            low, high = r["ci"]
            print(
                f"{r['variant']:<40} {r['median_rate']:>8.0f}  ratio {r['ratio']:.3f} "
                f"({low:.3f}-{high:.3f}, {100 * r['ci_coverage']:.1f} %)"
            )
        print(f"seed {args.seed}; leftover processes: {'; '.join(left) or 'none'}")
    return 2 if left else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    return run_rounds(Bench(forkserver(args.preload)), args)


if __name__ == "__main__":
    sys.exit(main())
