"""Where does labd's pipe set lose its ~6 %? One ingredient of a labd pipe set at a
time, built by hand beside the bare loop of bench/overhead.py (as manager_isolate.py
does for the Manager).

``compare_check.py`` measures the pipe at 0.92-0.95 of the bare loop, pooled 0.936
(0.910-0.960) over 60 pairs. Variants, combined with ``+``:

    bare      overhead.py's loop: forkserver children sending labd's frame on a pipe of
              their own, one printer reading them all in 64 KiB chunks (the baseline
              every other variant is divided by)
    labd      a real set of a private labd, as overhead.py runs one
    compare   the same labd's ``labctl compare pipe`` run, as compare_check.py runs it
    asrun     a plain set of the same labd with the parameters an experiment's run has
              (interval 0.0, a duration, a name)
    worker    the counters run labd's worker code and PipeMessages.counter
              (labd.worker.process.run: its board, stop pipe, watch thread, group)
    printer   the printer runs labd's worker code and PipeMessages.printer (its bulk
              check, latency sampling, display thread)
    launch    the counters are forked by one launcher with os.fork, as labd's are
    preload   (with --preload, for every variant) the forkserver preloads and freezes
              what labd's preloads

Each round runs every variant once, in a shuffled order; per variant, the median over
the rounds of variant / bare with the sign test's interval (bench/pairstats.py).

    python bench/pipe_isolate.py [--variants bare,labd,worker+printer+launch]
                                 [--counters N] [--rounds N] [--seconds S] [--preload]

Like overhead.py, this module is re-imported by every forkserver child: standard
library (and overhead.py's stdlib-only top) at the top, labd imported where needed.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import multiprocessing.context
import sys
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from benchlib import forkserver
from manager_isolate import counters, parser, run_rounds, split_variants, window
from overhead import Case, Labd, bare_pipe_counter, bare_pipe_printer

PARTS = ("bare", "labd", "compare", "asrun", "worker", "printer", "launch")


def labd_worker(spec: Any, slots: Any, wake: Any, out: Any, *args: Any) -> None:
    """A counter or printer of labd's pipe mechanism, run by labd's worker code."""
    from labd.mechanisms.pipe import PipeMessages
    from labd.worker import process

    process.run(spec, PipeMessages, slots, wake, out, args)


def drain(conn: Connection) -> None:
    """Read a labd printer's lines (``Time: N``, 10 a second) until EOF."""
    try:
        while conn.recv_bytes():
            pass
    except (EOFError, OSError):
        pass


class AsRun(Case):
    """A case whose labd set has the parameters labd.experiments.measure gives a run."""

    def labd_params(self) -> dict[str, Any]:
        return {"interval": "0.0", "duration": "123.5", "name": "exp 1: pipe n=1 rep 1/1"}


def _wake(end: Connection) -> None:
    """Ask labd's workers of one role to stop (a bare one reads no stop pipe)."""
    with contextlib.suppress(BrokenPipeError):
        end.send_bytes(b"stop")


class Bench:
    """The private labd, and one run of a variant."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, counters: int) -> None:
        self.ctx = ctx
        self.counters = counters
        self.labd: Labd | None = None

    def run(self, variant: str, seconds: float, warmup: float) -> float:
        parts = set(variant.split("+"))
        if parts & {"labd", "compare", "asrun"}:
            return self.run_labd(seconds, warmup, parts)
        from labd.worker import board
        from labd.worker.contexts import WorkerSpec

        ctx: Any = self.ctx
        n = self.counters
        stop = ctx.RawValue("i", 0)
        received = ctx.RawValue("q", -1)
        slots = ctx.RawArray("q", board.size(n, 1))  # labd's workers' board
        wakes = [ctx.Pipe(duplex=False) for _ in range(2)]  # counters', printer's
        lines_r, lines_w = ctx.Pipe(duplex=False)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        values = {"interval": 0.0}

        def spec(role: str, index: int) -> Any:
            return WorkerSpec(1, role, index, n, 1, values, 0, -1)

        if "worker" in parts:
            done = board.view(slots)[1 : 2 * n : 2]  # each counter's done tally
            targets = [
                (labd_worker, (spec("counter", i), slots, wakes[0][0], lines_w, w))
                for i, (_, w) in enumerate(pipes)
            ]
        else:
            out = done = ctx.RawArray("q", n)
            targets = [(bare_pipe_counter, (stop, out, i, w)) for i, (_, w) in enumerate(pipes)]
        readers = tuple(r for r, _ in pipes)
        if "printer" in parts:
            reader = ctx.Process(
                target=labd_worker,
                args=(spec("printer", 0), slots, wakes[1][0], lines_w, readers),
            )
        else:
            reader = ctx.Process(target=bare_pipe_printer, args=(readers, received))
        procs = [*counters(ctx, targets, "launch" in parts), reader]
        for p in procs:
            p.start()
        for end in (*(e for pair in pipes for e in pair), lines_w, wakes[0][0], wakes[1][0]):
            end.close()  # the printer sees EOF once the counters exit; lines once all do
        drainer = threading.Thread(target=drain, args=(lines_r,), daemon=True)
        drainer.start()
        try:
            rate = window(done, warmup, seconds)
        finally:
            stop.value = 1
            _wake(wakes[0][1])  # counters first, then the printer
            for p in procs[:-1]:
                p.join(10)
            _wake(wakes[1][1])
            for p in procs:
                p.join(10)
                if p.exitcode is None:
                    p.kill()
                    p.join()
            drainer.join(5)
            for end in (lines_r, wakes[0][1], wakes[1][1]):
                end.close()
        return rate

    def run_labd(self, seconds: float, warmup: float, parts: set[str]) -> float:
        if self.labd is None:
            self.labd = Labd()
            self.labd.start(new_session=False)
        case = AsRun("pipe", self.counters) if "asrun" in parts else Case("pipe", self.counters)
        if "compare" in parts:
            from compare_check import compare_run

            return compare_run(self.labd, case, warmup, seconds)[0]
        return float(self.labd.run(case, warmup, seconds).rate)

    def close(self) -> list[str]:
        return self.labd.close() if self.labd is not None else []


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = parser(__doc__, "bare,labd,worker+printer+launch")
    ap.add_argument("--counters", type=int, default=1, help="counters per set (1)")
    args = ap.parse_args(argv)
    split_variants(ap, args, PARTS)
    if args.counters < 1:
        ap.error("--counters: at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    return run_rounds(Bench(forkserver(args.preload), args.counters), args)


if __name__ == "__main__":
    sys.exit(main())
