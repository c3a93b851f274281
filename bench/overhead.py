"""labd's overhead: a flat-out labd set against a bare multiprocessing loop beside it.

For each built-in mechanism (shared, shared lock=yes, manager, manager lock=yes, queue,
pipe), with 1 and 4 counters at ``interval=0``, this measures increments per second of a
labd set and of a hand-written loop that does the same thing with the same resource and
the same start method (forkserver), alternating the two in one run, and prints
``ratio = labd / bare`` (target: >= 0.95). See bench/README.md for what exactly runs.

    python bench/overhead.py [--seconds S] [--repeat N] [--only MECH] [--json]

The module is re-imported by every forkserver child (Python 3.11 does not preload
``__main__``), so it imports only the standard library at the top; rpyc and psutil are
imported where the parent needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.managers import SyncManager
from typing import Any

from benchlib import PrivateLabd, machine

TARGET = 0.95
PAYLOAD = 16
QUEUE_MAXSIZE = 1000
#: labd's pipe frame: magic 4s | seq Q | sent_ns Q | payload length I | crc32 I | payload
#: (labd.mechanisms.pipe._HEAD); multiprocessing adds a 4-byte length in front.
PIPE_FRAME = struct.calcsize("!4sQQII") + PAYLOAD
PIPE_WIRE = 4 + PIPE_FRAME
#: a bare counter publishes its count and looks at the stop flag after each batch, sized
#: as labd's counters size theirs (labd.worker.contexts): doubled while a batch takes
#: under 2 ms, halved over 20 ms. A fixed count (it was 1000 increments, 50 for the
#: Manager) published a slow counter's tally every 80-125 ms (queue, manager lock=yes at
#: 4 counters): +-5-8 % of a 1.5 s window at each end, where labd's is a few ms.
MIN_BATCH_S, MAX_BATCH_S, MAX_BATCH = 0.002, 0.02, 1 << 20
POLL_S = 0.005  # status polling while waiting for a fresh labd sample (10 Hz sampler)
FRESH_TIMEOUT_S = 1.0
READY_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Case:
    mechanism: str
    counters: int
    lock: bool = False

    @property
    def label(self) -> str:
        return f"{self.mechanism} lock=yes" if self.lock else self.mechanism

    def labd_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"interval": "0"}
        if self.mechanism in ("shared", "manager"):
            params["lock"] = self.lock
        return params


@dataclass
class Run:
    """One measured window of a bare loop or a labd set."""

    rate: float  # increments per second
    worker_cpu: float  # CPU seconds of the counters and printers over the window
    printer_cpu: float  # ... of which the printers'
    server_cpu: float | None = None  # the Manager server's (manager mechanisms)
    daemon_cpu: float | None = None  # labd's own (labd runs)
    window: float = 0.0  # seconds
    ready: float | None = None  # seconds from starting the processes until all counted

    @property
    def increments(self) -> float:
        return self.rate * self.window

    def cpu_us_per_inc(self, server: bool = False) -> float:
        """Microseconds of CPU per increment: the workers' (plus the server's)."""
        cpu = self.worker_cpu + ((self.server_cpu or 0.0) if server else 0.0)
        return cpu / self.increments * 1e6 if self.increments else 0.0


@dataclass
class CaseResult:
    case: Case
    bare: list[Run] = field(default_factory=list)  # one per repetition
    labd: list[Run] = field(default_factory=list)

    @property
    def bare_median(self) -> float:
        return statistics.median(r.rate for r in self.bare)

    @property
    def labd_median(self) -> float:
        return statistics.median(r.rate for r in self.labd)

    @property
    def ratio(self) -> float:
        """labd's median rate over the bare loop's median rate."""
        return self.labd_median / self.bare_median if self.bare_median else 0.0

    @property
    def best_ratio(self) -> float:
        """labd's best rate over the bare loop's best: the least disturbed runs."""
        best = max(r.rate for r in self.bare)
        return max(r.rate for r in self.labd) / best if best else 0.0

    @property
    def paired(self) -> list[float]:
        """labd / bare of each repetition (the two ran next to each other)."""
        return [
            lab.rate / bare.rate if bare.rate else 0.0
            for bare, lab in zip(self.bare, self.labd, strict=True)
        ]

    def cpu_per_inc(self, which: str) -> float:
        """Median CPU microseconds per increment (workers, plus the Manager server)."""
        runs = self.bare if which == "bare" else self.labd
        return statistics.median(r.cpu_us_per_inc(server=True) for r in runs)

    def printer_pct(self, which: str) -> float:
        """Median CPU of the printers, in % of one core (near 100: they are the limit)."""
        runs = self.bare if which == "bare" else self.labd
        return statistics.median(
            100.0 * r.printer_cpu / r.window if r.window else 0.0 for r in runs
        )

    def daemon_cpu_pct(self) -> float:
        return statistics.median(
            100.0 * (r.daemon_cpu or 0.0) / r.window if r.window else 0.0 for r in self.labd
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.case),
            "label": self.case.label,
            "bare_rates": [r.rate for r in self.bare],
            "labd_rates": [r.rate for r in self.labd],
            "bare_median": self.bare_median,
            "labd_median": self.labd_median,
            "ratio": self.ratio,
            "best_ratio": self.best_ratio,
            "paired_ratios": self.paired,
            "ok": self.ratio >= TARGET,
            "bare_cpu_us_per_inc": self.cpu_per_inc("bare"),
            "labd_cpu_us_per_inc": self.cpu_per_inc("labd"),
            "labd_daemon_cpu_pct": self.daemon_cpu_pct(),
            "bare_printer_cpu_pct": self.printer_pct("bare"),
            "labd_printer_cpu_pct": self.printer_pct("labd"),
            "bare_runs": [asdict(r) for r in self.bare],
            "labd_runs": [asdict(r) for r in self.labd],
        }


# --- the bare loops (run in forkserver children) ----------------------------------------


def _batches(stop: Any, out: Any, index: int) -> Iterator[int]:
    """A bare counter's batches until the parent's window is over (``stop``, a
    RawValue('i')); after each, its count so far goes to its own slot of ``out`` (a
    RawArray('q')), which the parent reads at both ends of its window, as labd's
    runner reads its board. The last batch's count is the counter's total."""
    n, done = 1, 0
    clock = time.perf_counter
    while not stop.value:
        t0 = clock()
        yield n
        done += n
        out[index] = done
        dt = clock() - t0
        if dt < MIN_BATCH_S and n < MAX_BATCH:
            n *= 2
        elif dt > MAX_BATCH_S and n > 1:
            n //= 2


def bare_shared(stop: Any, out: Any, index: int, v: Any, lock: bool) -> None:
    _bare_increments(_batches(stop, out, index), v, v.get_lock() if lock else None)


def bare_manager(stop: Any, out: Any, index: int, v: Any, lock: Any) -> None:
    _bare_increments(_batches(stop, out, index), v, lock)


def _bare_increments(batches: Iterator[int], v: Any, lock: Any) -> None:
    """The lesson's loop written by hand, racy or under ``lock``."""
    if lock is not None:
        for n in batches:
            for _ in range(n):
                with lock:
                    v.value += 1
    else:
        for n in batches:
            for _ in range(n):
                v.value += 1


def bare_queue_counter(stop: Any, out: Any, index: int, q: Any) -> None:
    data = b"x" * PAYLOAD
    put, now = q.put, time.monotonic_ns
    for n in _batches(stop, out, index):
        for _ in range(n):
            put((now(), data))


def bare_queue_printer(q: Any, received: Any) -> None:
    get = q.get
    n = 0
    while get() is not None:
        n += 1
    received.value = n


def bare_pipe_counter(stop: Any, out: Any, index: int, conn: Connection) -> None:
    """Messages of labd's size, as one unchanging ``bytes``: what a hand-written loop
    sends. (labd's counter stamps one message in 16 with its send time; this loop used
    to stamp every one, ~0.12 us of its ~1 us a message, which labd does not do.)"""
    frame = b"x" * PIPE_FRAME
    send = conn.send_bytes
    for n in _batches(stop, out, index):
        for _ in range(n):
            send(frame)
    conn.close()


def bare_pipe_printer(ends: tuple[Connection, ...], received: Any) -> None:
    """Read every end in 64 KiB chunks until EOF on all, counting whole messages."""
    fds = {end.fileno() for end in ends}
    total = 0
    while fds:
        for ready in wait(list(fds)):
            assert isinstance(ready, int)
            fd = ready
            data = os.read(fd, 1 << 16)
            if data:
                total += len(data)
            else:
                fds.discard(fd)
    received.value = total // PIPE_WIRE


# --- running the bare loop --------------------------------------------------------------


class BareRunner:
    """Starts the bare processes of a case with the forkserver, measures, cleans up."""

    def __init__(self, ctx: multiprocessing.context.BaseContext) -> None:
        self.ctx = ctx
        self._manager: SyncManager | None = None

    def manager(self) -> SyncManager:
        if self._manager is None:
            self._manager = self.ctx.Manager()
        return self._manager

    def _server_pid(self) -> int:
        return int(self.manager()._process.pid)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._manager is not None:
            with contextlib.suppress(Exception):  # e.g. a Ctrl-C already ended it
                self._manager.shutdown()
            self._manager = None

    def run(self, case: Case, warmup: float, seconds: float) -> Run:
        ctx: Any = self.ctx
        n = case.counters
        stop = ctx.RawValue("i", 0)
        out = ctx.RawArray("q", n)
        received = ctx.RawValue("q", -1)
        printers: list[Any] = []
        counters: list[Any] = []
        parent_ends: list[Connection] = []
        q: Any = None
        mgr_objs: list[Any] = []
        counter_args: list[tuple[Any, ...]]
        try:
            if case.mechanism == "shared":
                v = ctx.Value("q", 0)
                counter_args = [(v, case.lock)] * n
                target: Any = bare_shared
            elif case.mechanism == "manager":
                mgr = self.manager()
                mv = mgr.Value("q", 0)
                ml = mgr.Lock() if case.lock else None
                mgr_objs += [mv, ml]
                counter_args = [(mv, ml)] * n
                target = bare_manager
            elif case.mechanism == "queue":
                q = ctx.Queue(QUEUE_MAXSIZE)
                printers.append(ctx.Process(target=bare_queue_printer, args=(q, received)))
                counter_args = [(q,)] * n
                target = bare_queue_counter
            elif case.mechanism == "pipe":
                pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
                parent_ends += [end for pair in pipes for end in pair]
                readers = tuple(r for r, _ in pipes)
                printers.append(ctx.Process(target=bare_pipe_printer, args=(readers, received)))
                counter_args = [(w,) for _, w in pipes]
                target = bare_pipe_counter
            else:
                raise ValueError(case.mechanism)
            started = time.monotonic()
            for p in printers:
                p.start()
            for i, extra in enumerate(counter_args):
                proc = ctx.Process(target=target, args=(stop, out, i, *extra))
                proc.start()
                counters.append(proc)
            for end in parent_ends:  # the printer sees EOF once the counters exit
                end.close()
            from labd.experiments.measure import cpu_seconds  # psutil: the parent only

            cpids, ppids = [p.pid for p in counters], [p.pid for p in printers]
            server = [self._server_pid()] if case.mechanism == "manager" else []
            ready = _until_counting(out, time.monotonic() + READY_TIMEOUT_S) - started
            time.sleep(warmup)
            t0, c0 = time.monotonic(), sum(out)
            k0, p0, s0 = cpu_seconds(cpids), cpu_seconds(ppids), cpu_seconds(server)
            time.sleep(seconds)
            t1, c1 = time.monotonic(), sum(out)
            k1, p1, s1 = cpu_seconds(cpids), cpu_seconds(ppids), cpu_seconds(server)
            stop.value = 1
            for proc in counters:
                proc.join(30)
                if proc.exitcode != 0:
                    raise RuntimeError(f"bare {case.label} counter exited {proc.exitcode}")
            if q is not None:
                q.put(None)
            for p in printers:
                p.join(30)
                if p.exitcode != 0:
                    raise RuntimeError(f"bare {case.label} printer exited {p.exitcode}")
        finally:
            killed = False
            for proc in (*counters, *printers):
                if proc.is_alive():
                    killed = True
                    proc.kill()
                    proc.join(5)
            if q is not None:
                if killed:
                    q.cancel_join_thread()  # nobody reads: do not wait on our feeder
                q.close()
                q.join_thread()
            del mgr_objs[:]
        # the last batch published every counter's total: the printer got them all
        if printers and received.value != sum(out):
            raise RuntimeError(f"bare {case.label}: sent {sum(out)}, got {received.value}")
        return Run(
            rate=(c1 - c0) / (t1 - t0),
            worker_cpu=k1 - k0 + p1 - p0,
            printer_cpu=p1 - p0,
            server_cpu=s1 - s0 if server else None,
            window=t1 - t0,
            ready=ready,
        )


def _until_counting(out: Any, deadline: float) -> float:
    """Wait until every counter has published a first batch; the instant it has.

    The warm-up starts there, as labd's runner starts it once ``spawn`` returns with
    the set's workers forked from labd's preloaded forkserver: a bare child is forked
    by the stdlib's forkserver and first re-imports this module, which on a loaded host
    took a sizeable part of the warm-up (see bench/README.md, compare_check)."""
    while not all(out):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bare counters did not start counting: {list(out)}")
        time.sleep(0.001)
    return time.monotonic()


# --- running labd -----------------------------------------------------------------------


#: labd's workers at the bare loops' priority (labd's default runs them 10 nicer): on a
#: loaded host a nice worker gets a fraction of the CPU a bare loop beside it gets
LIKE_FOR_LIKE = ("--worker-nice", "0")


class Labd(PrivateLabd):
    """A private labd, ended at close(), and every process it started noted."""

    def __init__(self) -> None:
        super().__init__("ipclab-bench-")
        self.seen: list[Any] = []  # psutil.Process of everything labd started

    def start(
        self,
        new_session: bool = True,
        args: tuple[str, ...] = LIKE_FOR_LIKE,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = super().start(new_session, args, env)
        self._note_children()
        return proc

    def _note_children(self) -> None:
        import psutil

        assert self.proc is not None
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if all(child.pid != p.pid for p in self.seen):
                    self.seen.append(child)

    def status(self, set_id: int) -> dict[str, Any]:
        st: dict[str, Any] = json.loads(self.conn.root.status((set_id,)))[0]
        if st["state"] != "running":
            raise RuntimeError(f"labd set {set_id} is {st['state']}: {st.get('error')}")
        return st

    def fresh(self, set_id: int) -> tuple[float, int]:
        """Wait for the sampler's next figures: (when they were taken, attempted).

        labd samples 10 times a second and status returns the cached figures, so a
        single read can be up to 0.1 s old. Polling until ``attempted`` changes pins
        the sample between two polls (about 5 ms); that offset is the same at both ends
        of the window and cancels.
        """
        start = time.monotonic()
        prev = self.status(set_id)["attempted"]
        before = time.monotonic()
        while True:
            time.sleep(POLL_S)
            attempted = self.status(set_id)["attempted"]
            after = time.monotonic()
            if attempted != prev:
                return (before + after) / 2, int(attempted)
            before = after
            if after - start > FRESH_TIMEOUT_S:
                raise RuntimeError(f"labd set {set_id}: attempted stuck at {attempted}")

    def until_counting(self, set_id: int) -> None:
        """Wait until every counter of the set has begun (the bare side does the same)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(json.loads(self.conn.root.inspect(set_id)).get("per_counter") or [0]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"labd set {set_id}: its counters did not start counting")
            time.sleep(POLL_S)

    def manager_pid(self) -> int | None:
        """labd's Manager server, from its log line (the API does not show it)."""
        found = re.findall(r"manager server started \(pid (\d+)", self.log_text())
        return int(found[-1]) if found else None

    def run(self, case: Case, warmup: float, seconds: float) -> Run:
        st = json.loads(
            self.conn.root.spawn(case.mechanism, case.counters, json.dumps(case.labd_params()))
        )
        set_id = int(st["id"])
        assert self.proc is not None
        cpids = [int(p["pid"]) for p in st["processes"] if p["role"] == "counter"]
        ppids = [int(p["pid"]) for p in st["processes"] if p["role"] != "counter"]
        server = []
        if case.mechanism == "manager":
            mgr = self.manager_pid()
            if mgr is None:
                raise RuntimeError("labd's log does not say which pid its Manager server has")
            server = [mgr]
        daemon = [self.proc.pid]
        from labd.experiments.measure import cpu_seconds

        try:
            self._note_children()
            self.until_counting(set_id)
            time.sleep(warmup)
            t0, a0 = self.fresh(set_id)
            k0, p0 = cpu_seconds(cpids), cpu_seconds(ppids)
            s0, d0 = cpu_seconds(server), cpu_seconds(daemon)
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
            t1, a1 = self.fresh(set_id)
            k1, p1 = cpu_seconds(cpids), cpu_seconds(ppids)
            s1, d1 = cpu_seconds(server), cpu_seconds(daemon)
        finally:
            final = json.loads(self.conn.root.stop((set_id,)))[0]
        if final["state"] != "stopped":
            raise RuntimeError(f"labd set {set_id} ended {final['state']}: {final.get('error')}")
        if case.mechanism in ("queue", "pipe") and final["lost"] != 0:
            raise RuntimeError(f"labd set {set_id} lost {final['lost']} messages")
        return Run(
            rate=(a1 - a0) / (t1 - t0),
            worker_cpu=k1 - k0 + p1 - p0,
            printer_cpu=p1 - p0,
            server_cpu=s1 - s0 if server else None,
            daemon_cpu=d1 - d0,
            window=t1 - t0,
        )

    def close(self) -> list[str]:
        """Shut labd down; the processes it left behind (none, if all is well)."""
        import psutil

        if self.proc is not None:
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.root.shutdown()
            self.disconnect()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        from labd.testing import wait_gone

        left: list[str] = []
        for p in wait_gone(self.seen, 5.0):
            with contextlib.suppress(psutil.Error):
                left.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        self.remove()
        return left


def own_leftovers() -> list[str]:
    """Our children still alive once everything is closed (none, if all is well).

    The stdlib's forkserver is stopped first. Its resource tracker is not: it exits by
    itself when we do (its pipe closes), and stopping it early would make it unlink
    semaphores that objects still alive (e.g. in a traceback) refer to.
    """
    import gc

    import psutil

    gc.collect()
    with contextlib.suppress(Exception):
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
    tracker = getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None)
    left = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.pid != tracker and child.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{child.pid} {' '.join(child.cmdline())[:80]}")
    return left


# --- driver -----------------------------------------------------------------------------

ALL_CASES = [
    Case(mech, n, lock)
    for mech, lock in (
        ("shared", False),
        ("shared", True),
        ("manager", False),
        ("manager", True),
        ("queue", False),
        ("pipe", False),
    )
    for n in (1, 4)
]


def select_cases(only: Sequence[str], counters: Sequence[int]) -> list[Case]:
    wanted = {w.strip() for item in only for w in item.split(",") if w.strip()}
    known = {c.mechanism for c in ALL_CASES} | {c.label.replace(" ", ":") for c in ALL_CASES}
    unknown = wanted - known
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )
    return [
        c
        for c in ALL_CASES
        if c.counters in counters
        and (not wanted or c.mechanism in wanted or c.label.replace(" ", ":") in wanted)
    ]


def fmt_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def render(results: list[CaseResult]) -> str:
    head = (
        f"{'':<20} {'increments/s (median)':^30} {'':>12} | {'CPU us/increment':^22} |\n"
        f"{'mechanism':<17} {'N':>2} {'bare':>8} {'labd':>8} {'ratio':>6} {'best':>6} "
        f"{'paired':>12} | {'bare':>7} {'labd':>7} {'ratio':>6} | {'labd%':>5} "
        f"{'prn% b/l':>8} | ok"
    )
    lines = [head, "-" * len(head.splitlines()[-1])]
    for r in results:
        pr = r.paired
        cb, cl = r.cpu_per_inc("bare"), r.cpu_per_inc("labd")
        lines.append(
            f"{r.case.label:<17} {r.case.counters:>2} {fmt_rate(r.bare_median):>8} "
            f"{fmt_rate(r.labd_median):>8} {r.ratio:>6.3f} {r.best_ratio:>6.3f} "
            f"{min(pr):>5.2f}-{max(pr):<6.2f} | {cb:>7.2f} {cl:>7.2f} "
            f"{(cb / cl if cl else 0.0):>6.3f} | {r.daemon_cpu_pct():>5.1f} "
            f"{r.printer_pct('bare'):>4.0f}/{r.printer_pct('labd'):<3.0f} | "
            f"{'yes' if r.ratio >= TARGET else 'NO'}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="measured window of each run, after the warm-up (default 1.5)",
    )
    ap.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="seconds each run runs before its window opens (default 0.5)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="bare/labd pairs per case; the table shows medians (default 3)",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="MECH",
        help="shared, manager, queue, pipe, or a variant such as shared:lock=yes;"
        " repeat or comma-separate",
    )
    ap.add_argument(
        "--counters", default="1,4", help="comma-separated counter counts (default 1,4)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.warmup < 0 or args.repeat < 1:
        ap.error("--seconds must be > 0, --warmup >= 0, --repeat >= 1")
    try:
        counters = [int(x) for x in args.counters.split(",") if x.strip()]
    except ValueError:
        ap.error("--counters takes integers, e.g. 1,4")
    cases = select_cases(args.only, counters)
    if not cases:
        ap.error("nothing selected")

    info = machine()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))
    say(
        f"ipclab overhead: labd set vs bare multiprocessing loop, interval=0, forkserver\n"
        f"machine: nproc={info['nproc']} (usable {info['cpus_usable']}), "
        f"Python {info['python']} ({info['implementation']}), {info['platform']}\n"
        f"load average at start: {' '.join(map(str, info['loadavg']))}\n"
        f"runs: warm-up {args.warmup:g} s + window {args.seconds:g} s, {args.repeat} "
        f"pair(s) per case, order bare,labd then labd,bare (alternating); "
        f"target ratio >= {TARGET}\n"
    )

    ctx = multiprocessing.get_context("forkserver")
    bare = BareRunner(ctx)
    labd = Labd()
    results: list[CaseResult] = []
    leftovers: list[str] = []
    started = time.monotonic()
    interrupted = False
    try:
        labd.start()
        for case in cases:
            res = CaseResult(case)
            for rep in range(args.repeat):
                order = ("bare", "labd") if rep % 2 == 0 else ("labd", "bare")
                for who in order:
                    if who == "bare":
                        res.bare.append(bare.run(case, args.warmup, args.seconds))
                    else:
                        res.labd.append(labd.run(case, args.warmup, args.seconds))
            results.append(res)
            say(
                f"  {case.label:<17} N={case.counters}: bare "
                f"{' '.join(fmt_rate(x.rate) for x in res.bare)} | labd "
                f"{' '.join(fmt_rate(x.rate) for x in res.labd)} -> {res.ratio:.3f}"
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bare.close()
        leftovers += labd.close()
        leftovers += own_leftovers()
    elapsed = time.monotonic() - started
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(
            json.dumps(
                {
                    "machine": info,
                    "settings": {
                        "seconds": args.seconds,
                        "warmup": args.warmup,
                        "repeat": args.repeat,
                        "target": TARGET,
                    },
                    "results": [r.as_dict() for r in results],
                    "elapsed_s": round(elapsed, 1),
                    "leftover_processes": leftovers,
                },
                indent=2,
            )
        )
    else:
        print()
        print(render(results))
        print(
            "\nratio = median labd rate / median bare rate (the target); best = best labd / "
            "best bare;\n  paired = range of labd/bare over the pairs that ran side by side\n"
            "cpu us/inc = CPU time of counters + printers (+ the Manager server) per "
            "increment, median;\n  its ratio = bare / labd (1 = labd costs no more CPU); "
            "labd% = labd daemon's own CPU, % of one core;\n  prn% b/l = printer CPU, "
            "% of one core, bare/labd (shared and manager: labd's 10 Hz printer only)\n"
            f"load average at end: {' '.join(map(str, info['loadavg_end']))}; "
            f"elapsed {elapsed:.0f} s"
        )
        print("leftover processes: " + ("none" if not leftovers else "; ".join(leftovers)))
    if interrupted:
        print("interrupted: the table shows the cases that finished", file=sys.stderr)
        return 130
    if leftovers:
        return 2
    return 0 if all(r.ratio >= TARGET for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
