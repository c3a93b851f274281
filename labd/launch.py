"""Starting a set's workers: labd's side of :mod:`labd.worker.launcher`.

A set's workers are started by a few launchers (one per share of the set), each one
round trip to the forkserver (or one spawn, or one fork); each launcher forks its
share from its warm interpreter and reports their pids, then their exit codes. A
launcher's share is bounded by the descriptors one start may send (the forkserver
takes at most 256) and, so that both cores fork at once, a set of ``PARALLEL_MIN``
workers or more is shared between ``PARALLEL`` launchers.

Start order: the first launcher (printers first) leads the set's process group; the
others start once its printers run, and join the group.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from multiprocessing import process as mp_process
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Any

from labd.errors import LabError
from labd.proclimit import limit_error
from labd.worker import launcher
from labd.worker.contexts import WorkerSpec
from labd.worker.launcher import Order, Plan

#: descriptors one launcher may be sent, besides multiprocessing's own (256 in all)
FD_BUDGET = 200
PARALLEL = max(1, min(2, os.cpu_count() or 1))
PARALLEL_MIN = 16  # workers from which a set is shared between PARALLEL launchers
#: a worker's start: role, index, pid, and the launcher that reports its exit
Started = Callable[[str, int, int, "Launch"], None]


class Launch:
    """One launcher process and its report pipe."""

    def __init__(self, context: BaseContext, plan: Plan, name: str) -> None:
        self._reader, writer = context.Pipe(duplex=False)
        self.process = context.Process(  # type: ignore[attr-defined]
            target=launcher.run, args=(plan, writer), name=name, daemon=False
        )
        try:
            self.process.start()
        except (OSError, EOFError) as exc:  # EOF: the forkserver died (of a failed fork?)
            self._reader.close()
            raise (limit_error(exc) or exc) from None
        finally:
            writer.close()
        # labd joins it itself: out of multiprocessing's list (polled by every start, and
        # joined at labd's exit); and the set's resources are not kept alive by it
        mp_process._children.discard(self.process)  # type: ignore[attr-defined]
        self.process._args = ()
        self.pid: int = self.process.pid
        os.set_blocking(self._reader.fileno(), False)
        self._lock = threading.Lock()
        self._buffer = b""
        self._events: list[tuple[int, int, int, int]] = []  # STARTED, DONE, FAILED
        self._codes: dict[int, int] = {}  # pid -> exit code
        self.eof = False
        self.done = False

    @property
    def fileno(self) -> int:
        return self._reader.fileno()

    def pump(self) -> None:
        """Read what the launcher reported so far (never blocks)."""
        with self._lock:
            if self.eof:
                return
            try:
                data = os.read(self._reader.fileno(), 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return
            self._buffer += data
            size = launcher.RECORD.size
            whole = len(self._buffer) - len(self._buffer) % size
            for kind, a, b, c in launcher.RECORD.iter_unpack(self._buffer[:whole]):
                if kind == launcher.EXITED:
                    self._codes[a] = b
                else:
                    self._events.append((kind, a, b, c))
            self._buffer = self._buffer[whole:]

    def events(self) -> list[tuple[int, int, int, int]]:
        with self._lock:
            out, self._events = self._events, []
        return out

    def status(self, pid: int, timeout: float) -> int | None:
        """The exit code of worker ``pid`` as the launcher reports it (waiting up to
        ``timeout``); None if the launcher cannot tell (it is gone)."""
        deadline = time.monotonic() + timeout
        while True:
            self.pump()
            with self._lock:
                if pid in self._codes:
                    return self._codes.pop(pid)
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                return None
            with contextlib.suppress(OSError):  # closed meanwhile (joined)
                wait([self._reader], left)

    def join(self, timeout: float) -> None:
        """Wait for the launcher to exit (it does once its workers have), then SIGKILL
        it; reap it either way, and close its pipe."""
        self.process.join(timeout)
        if self.process.exitcode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
            self.process.join(1.0)
        with contextlib.suppress(ChildProcessError):  # adopted by labd if the forkserver died
            os.waitpid(self.pid, os.WNOHANG)
        with self._lock:
            self._reader.close()
            self.eof = True


def launchers_for(workers: int) -> int:
    """How many launchers a set of ``workers`` is started by, before its descriptors are
    known (what :func:`shares` makes if each worker is sent one descriptor of its own)."""
    parallel = 1 if workers < PARALLEL_MIN else min(PARALLEL, workers)
    return max(parallel, math.ceil(workers / FD_BUDGET))


def shares(orders: Sequence[Order], fds: Sequence[set[int]]) -> list[list[int]]:
    """Indexes of ``orders`` split, in order, into launchers' shares: PARALLEL of them
    for a large set, more while a share's descriptors exceed FD_BUDGET."""
    size = len(orders) if len(orders) < PARALLEL_MIN else math.ceil(len(orders) / PARALLEL)
    out: list[list[int]] = [[]]
    held: set[int] = set()
    for i, mine in enumerate(fds):
        if out[-1] and (len(out[-1]) >= size or len(held | mine) > FD_BUDGET):
            out.append([])
            held = set()
        out[-1].append(i)
        held |= mine
    return out


def start_set(
    context: BaseContext,
    template: WorkerSpec,
    common: tuple[Any, Any, tuple[Connection, Connection], Connection],
    orders: Sequence[Order],
    started: Started,
) -> list[Launch]:
    """Start every order through launchers; ``started`` is told of each worker as its
    launcher reports it. Returns the launchers once every one has reported DONE;
    raises (with the launchers so far in ``LaunchError.launches``) if one could not."""
    mechanism, slots, wakes, out = common
    fds = [launcher.fds_of(o.args) for o in orders]
    launches: list[Launch] = []
    try:
        for k, share in enumerate(shares(orders, fds)):
            pgid = launches[0].pid if launches else 0
            plan = Plan(
                replace(template, pgid=pgid),
                mechanism,
                slots,
                wakes,
                out,
                tuple(orders[i] for i in share),
            )
            launches.append(Launch(context, plan, f"ipclab-{template.set_id}-launcher-{k}"))
            if k == 0:  # its printers run and it leads the group before the others start
                first = max(1, sum(1 for i in share if orders[i].role == "printer"))
                _collect(launches, started, until=first)
        _collect(launches, started)
    except BaseException as exc:
        raise LaunchError(exc, launches) from None
    return launches


class LaunchError(Exception):
    """Starting a set's workers failed; ``launches`` are those started so far."""

    def __init__(self, cause: BaseException, launches: list[Launch]) -> None:
        super().__init__(cause)
        self.cause = cause
        self.launches = launches


def _collect(launches: list[Launch], started: Started, until: int | None = None) -> None:
    """Hand each reported start to ``started`` until every launcher is DONE (or, with
    ``until``, the first launcher has reported that many starts)."""
    counts = {id(x): 0 for x in launches}
    while True:
        pending = [x for x in launches if not x.done and not x.eof]
        if (until is not None and counts[id(launches[0])] >= until) or not pending:
            break
        wait([x.fileno for x in pending], 5.0)
        for x in pending:
            x.pump()
            for kind, a, b, c in x.events():
                if kind == launcher.STARTED:
                    counts[id(x)] += 1
                    started(launcher.ROLES[a], b, c, x)
                elif kind == launcher.DONE:
                    x.done = True
                elif kind == launcher.FAILED:
                    x.done = True
                    exc = OSError(a, os.strerror(a))
                    raise (limit_error(exc) or exc) from None
    for x in launches:
        if not x.done and x.eof and (until is None or x is launches[0]):
            x.process.join(1.0)
            raise LabError(
                f"the launcher of its workers ended (exit code {x.process.exitcode}) "
                "before starting them all: see labd's log"
            )


def pidfd(pid: int) -> int:
    """A pidfd of ``pid``, readable once it has exited, whoever its parent is by then; for
    a worker already gone (and reaped), an fd readable at once stands in."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        readable, writer = os.pipe()
        os.close(writer)
        return readable
