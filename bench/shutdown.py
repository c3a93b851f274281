"""How fast labd shuts down: SIGTERM and SIGKILL with 100 and 500 processes, against a
hand-written multiprocessing parent beside it.

For each size P (--sizes 100,500), each repetition runs three shutdowns, each on fresh
processes:

- bare SIGTERM, the baseline: this script, run again as a subprocess (--bare-parent),
  starts P workers with the forkserver and, on SIGTERM, does what one writes by hand:
  "for p in procs: p.terminate()", then p.join() for each;
- labd SIGTERM: a private labd (socket, state dir and log in a temporary directory)
  runs sets totalling P processes across queue, pipe, shared and manager; SIGTERM makes
  it stop every set in order and exit, with code 0;
- labd SIGKILL: the same sets, then SIGKILL: each worker watches the daemon through a
  pidfd and exits at once.

The signal goes out --settle seconds after every worker is in its loop (each bare
worker has raised its flag, each labd counter has counted). From the signal, it times
the parent's exit, the last worker's exit and the last exit of everything the parent
started (forkserver, Manager server, resource tracker), then checks that no process and
no /dev/shm entry of the run is left. It prints medians, labd / bare ratios and the
issue's target: SIGTERM with 100 processes exits 0 within 2 s.

    python bench/shutdown.py [--sizes 100,500] [--repeat N] [--flat-out] [--json]

How exits are timed: each process gets a pidfd before the signal, and one epoll waits on
all of them (waking at least every 5 ms to watch the deadline). A pidfd turns readable
the moment its process exits, whoever its parent is and whether or not it has been
reaped yet, so a zombie counts as gone, and hundreds of processes are timed without
polling /proc on the CPUs the shutdown needs. The script makes itself a child subreaper:
whatever a dying parent leaves without a parent (a SIGKILLed labd's workers) is
reparented to it, not to pid 1, which in a container may never reap them; it reaps them
after each run, and whatever of its process tree still runs then is a leftover: killed
and reported.

Exit status: 0 when every run ended cleanly, 1 otherwise, 130 on Ctrl-C.

The module is re-imported by every bare worker (forkserver; Python 3.11 does not preload
``__main__``), so it imports only the standard library at the top; rpyc, psutil and
labd.testing (the leak checks the test suite uses too) are imported where the benchmark
needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import multiprocessing
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchlib import PrivateLabd, machine

if TYPE_CHECKING:
    import psutil

MECHANISMS = ("queue", "pipe", "shared", "manager")
TARGET_SIZE = 100  # the issue: "SIGTERM with 100 processes exits 0 within 2 s"
TARGET_S = 2.0
POLL_S = 0.005  # the exit watch wakes at least this often
READY_TIMEOUT_S = 120.0  # for P processes to start and reach their loops
SHUTDOWN_TIMEOUT_S = 30.0  # from the signal to the last exit; beyond it: leftovers
LEFTOVER_GRACE_S = 5.0  # for /dev/shm entries of a run to go after its last exit
PR_SET_CHILD_SUBREAPER = 36
KINDS = (("bare", "SIGTERM"), ("labd", "SIGTERM"), ("labd", "SIGKILL"))
TIMES = ("exit", "workers", "all")  # what each run times, from the signal


# --- the bare parent (run as a subprocess) and its workers (forkserver children) --------


def bare_worker(ready: Any, index: int, interval: float) -> None:
    """Raise this worker's flag, then tick (paced) or spin (flat out) until killed."""
    ready[index] = 1
    n = 0
    if interval > 0:
        while True:
            time.sleep(interval)
            n += 1
    while True:
        n += 1


def bare_parent(size: int, interval: float) -> int:
    """The baseline: start ``size`` workers, print their pids once all run, and on
    SIGTERM terminate and join them all, the natural hand-written way."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ctx: Any = multiprocessing.get_context("forkserver")
    ready = ctx.RawArray("b", size)
    procs = [ctx.Process(target=bare_worker, args=(ready, i, interval)) for i in range(size)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(ready):
        if time.monotonic() > deadline:
            for p in procs:
                p.kill()
            return 1
        time.sleep(0.01)
    print(json.dumps({"pids": [p.pid for p in procs]}), flush=True)
    stop.wait()
    for p in procs:
        p.terminate()
    for p in procs:
        p.join()
    return 0


# --- processes: exits, leftovers, /dev/shm ----------------------------------------------


def become_subreaper() -> bool:
    """Orphans of our descendants come to us rather than to pid 1 (Linux prctl)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def raise_fd_limit(need: int) -> None:
    """One pidfd per process: make sure the soft limit allows them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def describe(proc: psutil.Process) -> str:
    import psutil

    try:
        return f"{proc.pid} {' '.join(proc.cmdline())[:100]}"
    except psutil.Error:
        return f"{proc.pid} (gone)"


def kill_all(procs: Iterable[psutil.Process]) -> list[str]:
    """SIGKILL those still running and wait for them to go; describe them."""
    import psutil

    from labd.testing import running, wait_gone

    targets = running(procs)
    described = [describe(p) for p in targets]
    for p in targets:
        with contextlib.suppress(psutil.Error):
            p.kill()
    wait_gone(targets, LEFTOVER_GRACE_S)
    return described


def reap_zombie_children() -> None:
    """Reap our children that have exited: orphans handed to us as subreaper."""
    import psutil

    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def own_leftovers() -> list[str]:
    """Our descendants still running once a run is over (there must be none): killed."""
    import psutil

    left = kill_all(psutil.Process().children(recursive=True))
    reap_zombie_children()
    return left


def shm_left(before: set[str], held: set[str]) -> tuple[list[str], list[str]]:
    """New /dev/shm entries once the run is over: (ours, which are unlinked and reported;
    others', which none of our processes mapped, reported only as a note). Ours get
    ``LEFTOVER_GRACE_S`` to go (a resource tracker unlinks what a killed process left)."""
    from labd.testing import shm_entries

    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (shm_entries() - before) & held and time.monotonic() < deadline:
        time.sleep(0.05)
    new = shm_entries() - before
    ours = sorted(new & held)
    for name in ours:
        with contextlib.suppress(OSError):
            os.unlink(f"/dev/shm/{name}")
    return ours, sorted(new - held)


class ExitWatch:
    """Times the exits of processes through their pidfds, grouped (parent, workers,
    helpers): a pidfd is readable once its process has exited, zombie or reaped."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._fds: dict[int, tuple[str, psutil.Process]] = {}
        self.last: dict[str, float] = {}  # group -> monotonic time of its last exit

    def add(self, group: str, procs: Iterable[psutil.Process]) -> None:
        for p in procs:
            try:
                fd = os.pidfd_open(p.pid)
            except ProcessLookupError:
                continue  # reaped already: nothing to time
            if not p.is_running():  # the pid was reused: not the process we saw
                os.close(fd)
                continue
            self._epoll.register(fd, select.EPOLLIN)
            self._fds[fd] = (group, p)
            self.last.setdefault(group, 0.0)

    def wait(self, deadline: float) -> None:
        """Until every process has exited or the deadline (monotonic) has passed."""
        while self._fds and time.monotonic() < deadline:
            events = self._epoll.poll(POLL_S)
            now = time.monotonic()
            for fd, _ in events:
                group, _proc = self._fds.pop(fd)
                self._epoll.unregister(fd)
                os.close(fd)
                self.last[group] = now

    def pending(self) -> list[psutil.Process]:
        return [p for _, p in self._fds.values()]

    def since(self, start: float, groups: Sequence[str]) -> float | None:
        """Seconds from ``start`` to the last exit in these groups (None: not all exited)."""
        waiting = {g for g, _ in self._fds.values()}
        if waiting & set(groups):
            return None
        times = [self.last[g] for g in groups if g in self.last]
        return max(times) - start if times else 0.0

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()
        self._epoll.close()


# --- one run ----------------------------------------------------------------------------


def abridged(items: Sequence[str], first: int = 3) -> str:
    more = f"; and {len(items) - first} more" if len(items) > first else ""
    return "; ".join(items[:first]) + more


@dataclass
class Run:
    """One shutdown: who (labd or bare), which signal, P processes, what it took."""

    who: str
    signal: str
    size: int
    exit_s: float | None = None  # from the signal to the parent's exit
    workers_s: float | None = None  # ... to the last worker's exit
    all_s: float | None = None  # ... to the last exit of the parent and all it started
    exit_code: int | None = None
    leftovers: list[str] = field(default_factory=list)
    shm_left: list[str] = field(default_factory=list)
    shm_others: list[str] = field(default_factory=list)  # new, but none of ours mapped them
    error: str | None = None

    @property
    def kind(self) -> str:
        return f"{self.who} {self.signal}"

    @property
    def clean(self) -> bool:
        code_ok = self.signal == "SIGKILL" or self.exit_code == 0
        return (
            code_ok
            and self.error is None
            and self.all_s is not None
            and not self.leftovers
            and not self.shm_left
        )

    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(self.error)
        if self.signal == "SIGTERM" and self.exit_code not in (0, None):
            out.append(f"exit code {self.exit_code}")
        if self.all_s is None and not self.error:
            out.append(f"not every process exited within {SHUTDOWN_TIMEOUT_S:g} s")
        if self.leftovers:
            out.append(
                f"{len(self.leftovers)} process(es) left, killed: {abridged(self.leftovers)}"
            )
        if self.shm_left:
            out.append(f"/dev/shm entries left, removed: {abridged(self.shm_left)}")
        return [f"{self.kind} P={self.size}: {x}" for x in out]


def shut_down(
    run: Run,
    proc: subprocess.Popen[bytes],
    sig: signal.Signals,
    workers: list[psutil.Process],
    settle: float,
    shm_before: set[str],
) -> None:
    """Signal a parent whose workers all run, time the exits, check what is left."""
    import psutil

    from labd.testing import running, shm_mapped, wait_gone

    parent = psutil.Process(proc.pid)
    worker_pids = {w.pid for w in workers}
    helpers = [p for p in parent.children(recursive=True) if p.pid not in worker_pids]
    held = shm_mapped([parent, *workers, *helpers])
    raise_fd_limit(len(workers) + len(helpers) + 64)
    watch = ExitWatch()
    stuck: list[psutil.Process] = []
    try:
        watch.add("parent", [parent])
        watch.add("worker", workers)
        watch.add("helper", helpers)
        time.sleep(settle)
        start = time.monotonic()
        proc.send_signal(sig)
        watch.wait(start + SHUTDOWN_TIMEOUT_S)
        run.exit_s = watch.since(start, ["parent"])
        run.workers_s = watch.since(start, ["worker"])
        run.all_s = watch.since(start, ["parent", "worker", "helper"])
        stuck = watch.pending()
    finally:
        watch.close()
    run.leftovers += [describe(p) for p in running(stuck)]
    if proc.poll() is None and stuck:  # past the deadline: end it the SIGKILL way, so
        proc.kill()  # what it started can still clean up after it
    run.exit_code = proc.wait()
    kill_all(wait_gone(stuck, LEFTOVER_GRACE_S))
    run.leftovers += own_leftovers()
    run.shm_left, run.shm_others = shm_left(shm_before, held)


# --- the bare side ----------------------------------------------------------------------


def run_bare(size: int, interval: float, settle: float) -> Run:
    """Start the bare parent with ``size`` workers, SIGTERM it once all run."""
    import psutil

    from labd.testing import shm_entries

    run = Run("bare", "SIGTERM", size)
    shm_before = shm_entries()
    command = [sys.executable, os.path.abspath(__file__), "--bare-parent", str(size)]
    proc = subprocess.Popen(
        [*command, "--interval", str(interval)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # a Ctrl-C reaches us only; we stop it
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the parent gives up by itself after READY_TIMEOUT_S
        if not line:
            raise RuntimeError(f"the bare parent exited with {proc.wait()} before its workers ran")
        workers = [psutil.Process(pid) for pid in json.loads(line)["pids"]]
        shut_down(run, proc, signal.SIGTERM, workers, settle, shm_before)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        run.leftovers += own_leftovers()
    return run


# --- the labd side ----------------------------------------------------------------------


@dataclass(frozen=True)
class SetPlan:
    mechanism: str
    counters: int
    printers: int = 1


def plan_sets(total: int, set_size: int) -> list[SetPlan]:
    """Sets of about ``set_size`` processes (counters + 1 printer) totalling ``total``,
    the mechanisms taking turns."""
    count = max(1, min(math.ceil(total / set_size), total // 2))
    base, extra = divmod(total, count)
    sizes = [base + 1 if i < extra else base for i in range(count)]
    return [SetPlan(MECHANISMS[i % len(MECHANISMS)], n - 1) for i, n in enumerate(sizes)]


class Labd(PrivateLabd):
    """A private labd in its own temporary directory: socket, state dir and log."""

    def __init__(self) -> None:
        super().__init__("ipclab-shutdown-")

    def spawn(self, plan: Sequence[SetPlan], interval: float) -> list[int]:
        ids = []
        for item in plan:
            params = {"interval": f"{interval:g}", "printers": item.printers, "name": "shutdown"}
            st = json.loads(self.conn.root.spawn(item.mechanism, item.counters, json.dumps(params)))
            ids.append(int(st["id"]))
        return ids

    def wait_ready(self, ids: Sequence[int], expected: int) -> list[int]:
        """Every set running, ``expected`` workers alive, every counter has counted:
        the workers' pids."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            statuses = json.loads(self.conn.root.status(tuple(ids)))
            for st in statuses:
                if st["state"] not in ("starting", "running"):
                    raise RuntimeError(f"set {st['id']} is {st['state']}: {st.get('error')}")
            listed = [json.loads(self.conn.root.inspect(st["id"])) for st in statuses]
            pids = [p["pid"] for st in listed for p in st["processes"] if p["alive"]]
            running = all(st["state"] == "running" for st in statuses)
            if running and len(pids) == expected and self._counters_counted(ids):
                return pids
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{len(pids)} of {expected} workers running after {READY_TIMEOUT_S:g} s"
                )
            time.sleep(0.1)

    def _counters_counted(self, ids: Sequence[int]) -> bool:
        for set_id in ids:
            per_counter = json.loads(self.conn.root.inspect(set_id)).get("per_counter") or []
            if not per_counter or min(per_counter) == 0:
                return False
        return True

    def close(self) -> None:
        """After the run: make sure labd is gone, remove its directory."""
        self.disconnect()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.remove()


def run_labd(
    size: int, sig: signal.Signals, plan: Sequence[SetPlan], interval: float, settle: float
) -> Run:
    """Start a private labd, run ``plan`` (``size`` processes), signal it once all run."""
    import psutil

    from labd.testing import shm_entries

    run = Run("labd", sig.name, size)
    shm_before = shm_entries()
    labd = Labd()
    try:
        proc = labd.start()
        ids = labd.spawn(plan, interval)
        workers = [psutil.Process(pid) for pid in labd.wait_ready(ids, size)]
        labd.disconnect()  # no client attached: the shutdown alone is measured
        shut_down(run, proc, sig, workers, settle, shm_before)
        if run.signal == "SIGTERM" and run.exit_code != 0:
            run.error = f"labd's log ends: {labd.tail()}"
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        if labd.proc is not None:  # what labd started goes with it (see own_leftovers)
            with contextlib.suppress(psutil.Error):
                kill_all(psutil.Process(labd.proc.pid).children(recursive=True))
    finally:
        labd.close()
        run.leftovers += own_leftovers()
    return run


# --- results ----------------------------------------------------------------------------


def median(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


@dataclass
class SizeResult:
    size: int
    plan: list[SetPlan]
    runs: dict[str, list[Run]] = field(default_factory=dict)  # kind -> one per repetition

    def median(self, kind: str, what: str) -> float | None:
        return median(getattr(r, what) for r in self.runs.get(kind, []))

    def ratio(self, kind: str, what: str) -> float | None:
        """labd's median over the bare parent's SIGTERM median (SIGKILL too: a SIGKILLed
        bare parent leaves its workers running, there is nothing else to compare with)."""
        lab, bare = self.median(kind, what), self.median("bare SIGTERM", what)
        return lab / bare if lab is not None and bare else None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "sets": [asdict(p) for p in self.plan]}
        for kind, runs in self.runs.items():
            out[kind] = {
                "median_exit_s": self.median(kind, "exit_s"),
                "median_workers_s": self.median(kind, "workers_s"),
                "median_all_s": self.median(kind, "all_s"),
                "clean": all(r.clean for r in runs),
                "runs": [asdict(r) for r in runs],
            }
            if kind != "bare SIGTERM":
                shown = TIMES if kind == "labd SIGTERM" else TIMES[1:]
                out[kind]["ratios"] = {w: self.ratio(kind, f"{w}_s") for w in shown}
        return out


def target_verdict(results: Sequence[SizeResult]) -> dict[str, Any]:
    """The issue's absolute target, judged on the slowest run: every SIGTERM of labd
    with 100 processes exits 0 within 2 s."""
    found = [r for r in results if r.size == TARGET_SIZE]
    runs = found[0].runs.get("labd SIGTERM", []) if found else []
    if not runs:
        return {"measured": False, "met": None}
    times = [r.exit_s for r in runs]
    slowest = None if None in times else max(t for t in times if t is not None)
    codes = [r.exit_code for r in runs]
    met = slowest is not None and slowest <= TARGET_S and all(c == 0 for c in codes)
    return {"measured": True, "met": met, "slowest_exit_s": slowest, "exit_codes": codes}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def show_code(code: int | None) -> str:
    return "-" if code is None else str(code)


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render(results: Sequence[SizeResult], repeat: int) -> str:
    head = (
        f"{'':<21}{f'median of {repeat} run(s), ms':^26}   {'labd / bare':^20}\n"
        f"{'procs':>5}  {'shutdown':<14}{'exit':>8}{'workers':>9}{'all':>9}   "
        f"{'exit':>6}{'workers':>8}{'all':>6}   {'exit codes':<12}clean"
    )
    lines = [line.rstrip() for line in head.splitlines()]
    lines.append("-" * len(lines[-1]))
    for res in results:
        for who, sig in KINDS:
            kind = f"{who} {sig}"
            runs = res.runs.get(kind, [])
            codes = " ".join(show_code(r.exit_code) for r in runs) if sig == "SIGTERM" else "-"
            # a SIGKILLed labd exits at once: its exit time says nothing
            shown = [w for w in TIMES if sig == "SIGTERM" or w != "exit"]
            times = [ms(res.median(kind, f"{w}_s")) if w in shown else "-" for w in TIMES]
            ratios = [
                fmt_ratio(res.ratio(kind, f"{w}_s")) if w in shown and who == "labd" else "-"
                for w in TIMES
            ]
            lines.append(
                f"{res.size:>5}  {kind:<14}{times[0]:>8}{times[1]:>9}{times[2]:>9}   "
                f"{ratios[0]:>6}{ratios[1]:>8}{ratios[2]:>6}   {codes:<12}"
                f"{'yes' if runs and all(r.clean for r in runs) else 'NO'}"
            )
    return "\n".join(lines)


LEGEND = """\
exit = from the signal to the parent's exit (labd, or the bare parent); workers = to the
  last worker's exit; all = to the last exit of the parent and of everything it started
  (workers, forkserver, Manager server, resource tracker); a zombie counts as exited
labd / bare = labd's median over the bare parent's SIGTERM median of the same size (a
  SIGKILLed bare parent leaves its workers running: there is no bare SIGKILL to compare)"""


def render_target(verdict: dict[str, Any]) -> str:
    what = f"target: SIGTERM with {TARGET_SIZE} processes exits 0 within {TARGET_S:g} s"
    if not verdict["measured"]:
        return f"{what}: not measured (--sizes has no {TARGET_SIZE})"
    slowest = verdict["slowest_exit_s"]
    took = "no exit" if slowest is None else f"{slowest:.2f} s"
    codes = " ".join(map(show_code, verdict["exit_codes"]))
    return (
        f"{what}: {'met' if verdict['met'] else 'NOT met'} "
        f"(slowest of {len(verdict['exit_codes'])} run(s): {took}, exit codes {codes})"
    )


def progress(run: Run) -> str:
    text = f"{run.kind:<12}"
    if run.signal == "SIGTERM":
        text += f" exit {ms(run.exit_s):>5} (code {show_code(run.exit_code)})"
    text += f" workers {ms(run.workers_s):>5} all {ms(run.all_s):>5} ms"
    return text + ("" if run.clean else "  NOT CLEAN")


# --- driver -----------------------------------------------------------------------------


EPILOG = """\
The runs of a size alternate: bare, labd SIGTERM, labd SIGKILL, then the other way
round, and so on. The table gives medians, in ms from the signal: exit = to the
parent's exit; workers = to the last worker's exit; all = to the last exit of the parent
and everything it started. labd / bare = labd's median over the bare parent's SIGTERM
median (SIGKILL too: a SIGKILLed bare parent leaves its workers running for ever).

Exit status 0 when every run ended cleanly (exit code 0 on SIGTERM, every process gone
within 30 s, nothing left in /dev/shm), 1 otherwise. See bench/README.md."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n    python ")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--sizes",
        default="100,500",
        help="comma-separated process counts, each 2-2048, labd's limit (default 100,500)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs of each kind per size (default 3)")
    ap.add_argument(
        "--flat-out",
        action="store_true",
        help="counters at interval=0 and bare workers spinning, instead of the lesson's "
        "one tick a second: every process wants a CPU when the signal comes (heavy with "
        "500 processes on few cores)",
    )
    ap.add_argument(
        "--set-size",
        type=int,
        default=25,
        help="processes per labd set, counters + 1 printer, 2-256 (default 25: P=100 is one "
        "set of each mechanism, P=500 five of each)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds between every worker running and the signal (default 0.5)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument("--bare-parent", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error("--sizes takes integers, e.g. 100,500")
    if not args.sizes or not all(2 <= s <= 2048 for s in args.sizes):
        ap.error("--sizes: each between 2 and 2048")
    if args.repeat < 1 or args.settle < 0 or not 2 <= args.set_size <= 256:
        ap.error("--repeat must be >= 1, --settle >= 0, --set-size between 2 and 256")
    return args


def measure(
    sizes: Sequence[int],
    repeat: int,
    interval: float,
    set_size: int,
    settle: float,
    say: Callable[[str], None],
) -> list[SizeResult]:
    results = []
    for size in sizes:
        res = SizeResult(size, plan_sets(size, set_size))
        results.append(res)
        for rep in range(repeat):
            order = KINDS if rep % 2 == 0 else KINDS[::-1]
            for who, sig in order:
                if who == "bare":
                    run = run_bare(size, interval, settle)
                else:
                    run = run_labd(size, signal.Signals[sig], res.plan, interval, settle)
                res.runs.setdefault(run.kind, []).append(run)
                say(f"  P={size} run {rep + 1}: {progress(run)}")
                for problem in run.problems():
                    say(f"    {problem}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.bare_parent:
        return bare_parent(args.bare_parent, args.interval)
    interval = 0.0 if args.flat_out else 1.0
    subreaper = become_subreaper()
    info = machine()

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    plan_text = ", ".join(f"P={s}: {len(plan_sets(s, args.set_size))}" for s in args.sizes)
    say(
        f"ipclab shutdown: labd vs a bare multiprocessing parent, "
        f"{'flat out (interval=0)' if args.flat_out else 'paced (interval=1)'}, forkserver\n"
        f"machine: nproc={info['nproc']} (usable {info['cpus_usable']}), "
        f"Python {info['python']} ({info['implementation']}), {info['platform']}\n"
        f"load average at start: {' '.join(map(str, info['loadavg']))}\n"
        f"runs: {args.repeat} of each kind per size, signal {args.settle:g} s after every "
        f"worker runs\nlabd sets: ~{args.set_size} processes each (counters + 1 printer), "
        f"{', '.join(MECHANISMS)} in turn; sets: {plan_text}\n"
    )
    started = time.monotonic()
    results: list[SizeResult] = []
    leftovers: list[str] = []
    interrupted = False
    try:
        results = measure(args.sizes, args.repeat, interval, args.set_size, args.settle, say)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        leftovers += own_leftovers()
    elapsed = time.monotonic() - started
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    runs = [r for res in results for kind_runs in res.runs.values() for r in kind_runs]
    leftovers = [x for r in runs for x in r.leftovers] + leftovers
    problems = [p for r in runs for p in r.problems()]
    verdict = target_verdict(results)
    if args.json:
        doc = {
            "machine": info,
            "settings": {
                "sizes": args.sizes,
                "repeat": args.repeat,
                "interval": interval,
                "set_size": args.set_size,
                "settle_s": args.settle,
                "subreaper": subreaper,
            },
            "results": [r.as_dict() for r in results],
            "target": {"size": TARGET_SIZE, "seconds": TARGET_S, **verdict},
            "elapsed_s": round(elapsed, 1),
            "leftover_processes": leftovers,
            "problems": problems,
        }
        print(json.dumps(doc, indent=2))
    else:
        print()
        print(render(results, args.repeat))
        print(
            f"\n{LEGEND}\n{render_target(verdict)}"
            + f"\nload average at end: {' '.join(map(str, info['loadavg_end']))}; "
            f"elapsed {elapsed:.0f} s"
        )
        print(f"leftover processes: {abridged(leftovers, 10) if leftovers else 'none'}")
        others = sorted({x for r in runs for x in r.shm_others})
        if others:
            print(f"note: new /dev/shm entries that no process of the runs mapped: {others}")
    if interrupted:
        print("interrupted: the table shows the runs that finished", file=sys.stderr)
        return 130
    return 0 if results and not problems and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
