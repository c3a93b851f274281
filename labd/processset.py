"""One process set: a mechanism's resources, its counters and printers, their states.

Start order: printers, then counters (nothing is sent before someone listens). Stop
order: counters are asked to stop and exit, the mechanism releases the printers, the
printers drain and exit, the final figures are taken, resources are released. Every
wait is bounded: asked, then SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.context
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.managers import SyncManager
from typing import Any

from labd import launch, leftovers
from labd.bounded import SETUP_S, TEARDOWN_S, HookTimeout, Observer, call_within
from labd.lifecycle import Lifecycle
from labd.mechanisms.base import Mechanism
from labd.metrics import Figures, SetMetrics
from labd.printlog import PrintLog
from labd.protocol import MAX_DRAIN_S, State
from labd.stopplan import StopClock, StopTimes
from labd.worker import board, pacing
from labd.worker.contexts import WorkerSpec
from labd.worker.launcher import Order

log = logging.getLogger("labd.set")
LAUNCHER_EXIT_S = 2.0  # a launcher exits once it has reaped its workers


@dataclass(frozen=True)
class SetSpec:
    """What to run: checked values, the mechanism's and the common ones."""

    id: int
    mechanism: str
    counters: int
    values: dict[str, Any]
    owner: str | None = None  # who spawned it (labd.owners)

    @property
    def printers(self) -> int:
        return int(self.values["printers"])

    @property
    def processes(self) -> int:
        return self.counters + self.printers

    @property
    def footprint(self) -> int:
        """Every process the set runs: its workers and their launchers (labd.launch)."""
        return self.processes + launch.launchers_for(self.processes)

    @property
    def name(self) -> str:
        return str(self.values.get("name") or "")


@dataclass
class Worker:
    """One child. Only the reaper reaps it; everyone else waits on ``ended``."""

    role: str
    index: int
    pid: int
    launch: launch.Launch  # its launcher: its parent, which reports its exit code
    exitcode: int | None = None
    expected: bool = False  # the set asked it to end
    ended: threading.Event = field(default_factory=threading.Event)
    #: what the reaper waits on: readable once the process has exited, whoever its
    #: parent is by then (see labd.launch.pidfd)
    pidfd: int = -1

    def close_pidfd(self) -> None:
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = -1

    @property
    def alive(self) -> bool:
        return not self.ended.is_set()


@dataclass
class SetEnv:
    """The :class:`labd.mechanisms.base.SetupEnv` labd hands a mechanism."""

    set_id: int
    counters: int
    printers: int
    context: multiprocessing.context.BaseContext
    manager_source: Callable[[], tuple[SyncManager, int]]
    manager_generation: int | None = field(default=None)
    #: the wall clock, for display; order and durations come from time.monotonic
    clock: Callable[[], float] = time.time
    nice: int = 0  # the workers' niceness above labd's (labd --worker-nice)

    def manager(self) -> SyncManager:
        manager, self.manager_generation = self.manager_source()
        return manager


class ProcessSet:
    """A running experiment. The :class:`~labd.lab.Lab` drives it under its lock."""

    def __init__(
        self,
        spec: SetSpec,
        mechanism: Mechanism,
        env: SetEnv,
        output: PrintLog,
        on_state: Callable[[ProcessSet, State, str], None],
        watch: Callable[[ProcessSet, Worker], None],
    ) -> None:
        self.spec = spec
        self.mechanism = mechanism
        self.env = env
        self.output = output
        self._watch = watch
        #: the set's state; see labd.lifecycle for the table and the lock order
        self.life = Lifecycle(f"set {spec.id}", lambda state, detail: on_state(self, state, detail))
        self.started_at: float | None = None  # wall clock, for display
        self.stopped_at: float | None = None
        self._ran: tuple[float, float | None] | None = None  # monotonic start, end
        self.workers: list[Worker] = []
        self.metrics: SetMetrics | None = None
        self.busy = threading.Lock()  # held by a start or a stop in progress
        self.deadline: float | None = None
        self._slots: Any = None
        self._wake: dict[str, Connection] = {}
        self.output_done: threading.Event | None = None
        self.pgid = 0  # the set's process group, led by its first launcher
        self.launches: list[launch.Launch] = []  # the processes that fork its workers
        self.cgroup = ""  # the set's own cgroup, where the host delegates one (labd.cgroups)
        self._observer: Observer | None = None
        self._forced: list[str] = []  # workers a stop had to signal ("2 counter(s)")
        self.stop_clock = StopClock()  # its stop's bounds, which a shutdown may shorten
        #: until then (monotonic), the sampler reads its processes' CPU and RSS each second
        self.watched_until = 0.0

    # --- start ---------------------------------------------------------------------
    def start(self, collect: Callable[[Connection, PrintLog], threading.Event]) -> None:
        """Create resources and start printers, then counters; ``collect`` reads output."""
        spec, ctx = self.spec, self.env.context
        call_within(lambda: self.mechanism.setup(self.env), SETUP_S, "setup()")
        self._slots = ctx.RawArray("q", board.size(spec.counters, spec.printers))
        reader = board.BoardReader(self._slots, spec.counters, spec.printers)
        self._observer = Observer(self.mechanism.observe, on_hang=self._observe_hung)
        self.metrics = SetMetrics(
            reader,
            self._observer,
            messages=type(self.mechanism).messages,
            interval=float(spec.values["interval"]),
        )
        counter_wake, self._wake["counter"] = ctx.Pipe(duplex=False)
        printer_wake, self._wake["printer"] = ctx.Pipe(duplex=False)
        out_reader, out_writer = ctx.Pipe(duplex=False)
        self.output_done = collect(out_reader, self.output)
        try:
            self._launch_workers((counter_wake, printer_wake), out_writer)
        finally:
            for end in (counter_wake, printer_wake, out_writer):
                end.close()
        self.mechanism.started()
        self.started_at = self.env.clock()
        self._ran = (time.monotonic(), None)
        duration = spec.values.get("duration")
        if duration:
            self.deadline = time.monotonic() + float(duration)
        if self.life.move(State.RUNNING, only_from=(State.STARTING,)):  # not failed meanwhile
            for w in self.workers:  # ended while starting: the reaper's call was too early
                if not w.alive:
                    self.worker_exited(w)

    def _launch_workers(self, wakes: tuple[Connection, Connection], out: Connection) -> None:
        """Printers, then counters, forked by the set's launchers (see labd.launch)."""
        spec, mech = self.spec, self.mechanism
        orders = [Order("printer", j, mech.printer_args(j)) for j in range(spec.printers)]
        orders += [Order("counter", i, mech.counter_args(i)) for i in range(spec.counters)]
        template = WorkerSpec(
            spec.id,
            "",
            0,
            spec.counters,
            spec.printers,
            dict(spec.values),
            daemon_pid=os.getpid(),
            cgroup=self.cgroup,
            nice=self.env.nice,
            phase=pacing.set_phase(spec.id),
        )
        common = (type(mech), self._slots, wakes, out)
        try:
            self.launches = launch.start_set(self.env.context, template, common, orders, self._add)
        except launch.LaunchError as exc:
            self.launches = exc.launches
            raise exc.cause from None
        leader = self.launches[0].pid
        with contextlib.suppress(OSError):
            if os.getpgid(leader) != leader:
                log.warning("set %d: its launcher made no process group", spec.id)

    def _add(self, role: str, index: int, pid: int, source: launch.Launch) -> None:
        """A worker its launcher reports started: watched from now on."""
        worker = Worker(role, index, pid, source, pidfd=launch.pidfd(pid))
        self.workers.append(worker)
        self._watch(self, worker)
        self.pgid = self.pgid or source.pid  # the first launcher leads the set's group

    @property
    def launcher_pids(self) -> list[int]:
        return [x.pid for x in self.launches]

    # --- states ----------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self.life.state

    @property
    def error(self) -> str | None:
        return self.life.error

    @property
    def duration(self) -> float | None:
        """Seconds it ran (so far), by the monotonic clock; None before it started."""
        if self._ran is None:
            return None
        start, end = self._ran
        return (time.monotonic() if end is None else end) - start

    @property
    def live(self) -> bool:
        return self.life.live

    def worker_exited(self, worker: Worker) -> None:
        """The reaper saw a worker end. Unexpected while running: the set degrades."""
        what = f"{worker.role} {worker.index} (pid {worker.pid}) exited with code {worker.exitcode}"
        with self.life.lock:
            if worker.expected or self.state not in (State.RUNNING, State.DEGRADED):
                return
            log.warning("set %d: %s", self.spec.id, what)
            gone = all(not w.alive for w in self.workers)
            self.life.move(State.FAILED if gone else State.DEGRADED, what)

    def fail(self, reason: str) -> None:
        """Something the set depends on is gone (e.g. the Manager server)."""
        self.life.move(
            State.FAILED, reason, only_from=(State.STARTING, State.RUNNING, State.DEGRADED)
        )

    # --- stop ------------------------------------------------------------------------
    def ask_counters(self) -> None:
        """First phase of a stop; cheap, so many sets can be asked at once."""
        with self.life.lock:
            self.life.move(
                State.STOPPING,
                only_from=(State.STARTING, State.RUNNING, State.DEGRADED, State.FAILED),
            )
            for w in self.workers:
                if w.role == "counter":
                    w.expected = True
        self._send_wake("counter")

    def _observe_hung(self, exc: HookTimeout) -> None:
        """The mechanism's observe() hangs: this set's figures are stale, no one else's."""
        self.life.move(State.DEGRADED, f"{exc}: its value is stale", only_from=(State.RUNNING,))

    def finish_stop(self, times: StopTimes, until: float | None = None) -> Figures | None:
        """Wait for counters, release and wait for printers, take the final figures.

        ``until`` (a monotonic instant) bounds the whole stop, as at shutdown: workers
        drain while it allows, then get SIGTERM and SIGKILL; the figures are final anyway.
        """
        self.stop_clock.begin(times, until)
        self._end_role("counter")
        printers_until = self.stop_clock.role_until("printer")
        bound = min(MAX_DRAIN_S + TEARDOWN_S, printers_until - time.monotonic())
        try:
            call_within(self.mechanism.release_printers, bound, "release_printers()")
        except Exception as exc:
            log.warning("set %d: release_printers: %s", self.spec.id, exc)
        with self.life.lock:
            for w in self.workers:
                w.expected = True
        self._send_wake("printer")
        self._end_role("printer")
        self._sweep_group()
        figures = None
        try:
            figures = self.metrics.final() if self.metrics else None
        finally:  # whatever failed above, the set ends and lets go of its resources
            self.release()
            self.stopped_at = self.env.clock()
            if self._ran is not None:
                self._ran = (self._ran[0], time.monotonic())
            self.life.move(self.life.final(), self._cut_short(figures))
        return figures

    def _cut_short(self, figures: Figures | None) -> str:
        """What a stop that had to end workers left undone, in one line ('' if nothing)."""
        if not self._forced:
            return ""
        undelivered = figures.lost - figures.corrupt if figures is not None else 0
        what = f": {undelivered} message(s) undelivered" if undelivered > 0 else ""
        line = f"stop cut short, {' and '.join(self._forced)} ended{what}"
        log.warning("set %d: %s", self.spec.id, line)
        return line

    def _send_wake(self, role: str) -> None:
        end = self._wake.get(role)
        if end is not None and not end.closed:
            with contextlib.suppress(OSError):
                end.send_bytes(b"x")

    def _end_role(self, role: str) -> None:
        """Wait for a role's workers: asked (its grace, while they drain, but not past
        the stop's deadline for the role), then SIGTERM, then SIGKILL."""
        procs = [w for w in self.workers if w.role == role]
        for step in ("ask", "terminate", "kill"):
            left = [w for w in procs if w.alive]
            if not left:
                return
            if step == "terminate":
                self._forced.append(f"{len(left)} {role}(s)")
            if step != "ask":
                log.warning(
                    "set %d: %d %s(s) still running: %s",
                    self.spec.id,
                    len(left),
                    role,
                    "SIGTERM" if step == "terminate" else "SIGKILL",
                )
                for w in left:
                    _signal(w.pid, signal.SIGTERM if step == "terminate" else signal.SIGKILL)
            if step == "ask":
                self._wait_while_progressing(left, role)
            else:
                deadline = time.monotonic() + self.stop_clock.plan.terminate
                for w in left:
                    w.ended.wait(max(0.0, deadline - time.monotonic()))

    def _wait_while_progressing(self, workers: list[Worker], role: str) -> None:
        """Wait the role's grace; extend it (up to MAX_DRAIN_S) while messages still
        move, e.g. counters flushing a large queue as they exit: they are draining, not
        stuck. Never past the role's deadline, which a shutdown may bring forward."""
        clock = self.stop_clock
        give_up = time.monotonic() + MAX_DRAIN_S
        mark = self.metrics.progress() if self.metrics else 0
        while True:
            deadline = min(time.monotonic() + clock.grace(role), give_up)
            for w in workers:
                clock.wait(w.ended, deadline, role)
            over = time.monotonic() >= min(give_up, clock.role_until(role))
            if all(not w.alive for w in workers) or over:
                return
            now = self.metrics.progress() if self.metrics else mark
            if now == mark:
                return
            mark = now

    def _sweep_group(self) -> None:
        """End what its workers left in the set's group, once they have all ended."""
        if self.pgid and not any(w.alive for w in self.workers):
            leftovers.sweep_group(self.pgid, self.spec.id)

    def release(self) -> None:
        """Close pipes, reap the launchers (they exit once their workers have) and let
        the mechanism release its resources (idempotent)."""
        for x in self.launches:
            x.join(self._bound(LAUNCHER_EXIT_S))
        for end in self._wake.values():
            end.close()
        self._wake.clear()
        try:
            call_within(self.mechanism.teardown, self._bound(TEARDOWN_S), "teardown()")
        except Exception as exc:
            log.warning("set %d: teardown: %s", self.spec.id, exc)
        if self._observer is not None:
            self._observer.close()
        if self.metrics is not None:
            self.metrics.release()
        self._slots = None  # the board's shared memory goes back to the heap

    def _bound(self, seconds: float) -> float:
        """``seconds``, or less if the stop must end sooner (never under a tenth of one)."""
        until = self.stop_clock.until
        if until is None:
            return seconds
        return max(0.1, min(seconds, until - time.monotonic()))


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
