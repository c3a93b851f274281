"""A set's launcher: one process, started through the set's start method (a single
forkserver round trip), that forks the set's workers (or a share of them) from its
already warm interpreter with plain ``os.fork``, then stays as their parent.

What labd would have sent each worker, it sends the launcher once: the set's common
resources (board, stop pipes, output pipe), the mechanism and each worker's own
arguments. A forked worker keeps exactly the descriptors a spawned one would have
received (its own arguments' and the common ones) and drops the others, so a pipe's
printer still sees EOF once the counters that write it are gone.

The launcher enters the set's cgroup if it has one (labd.cgroups), and leads the set's
process group (or joins the group of the set's first launcher); its workers are born
in both. It reports to labd, on a pipe of fixed-size
records, each worker's pid as it forks it, then ``DONE`` (or ``FAILED`` with the errno
of a fork that failed, e.g. EAGAIN at the process limit), then each worker's exit code
as it reaps it. It watches labd through a pidfd and, if labd dies, ends the whole group
as the group's leader (see :func:`labd.worker.process.daemon_gone`). It exits once the
last of its workers has exited. It starts no thread: it may run at the process limit.
It keeps labd's priority; each worker, once forked, takes the set's niceness
(``labd --worker-nice``) before it runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import selectors
import struct
from dataclasses import dataclass, replace
from multiprocessing import context as mp_context
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from labd.worker import process as worker_process
from labd.worker.contexts import WorkerSpec

#: one report: kind, then three integers (see the kinds below)
RECORD = struct.Struct("=Bqqq")
STARTED = 1  # role (0 counter, 1 printer), index, pid
DONE = 2  # workers started, 0, 0
FAILED = 3  # errno of the fork that failed, workers started, 0
EXITED = 4  # pid, exit code (negative: the signal that ended it), 0
ROLES = ("counter", "printer")
#: WorkerSpec.pgid for workers whose launcher could not make or join the set's group:
#: they stay where they are, in no group of their own (setpgid refuses it)
NO_GROUP = -1


@dataclass(frozen=True)
class Order:
    """One worker to start: its role, index and the mechanism's arguments for it."""

    role: str
    index: int
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Plan:
    """What a launcher gets: the workers' common part and one order per worker."""

    template: WorkerSpec  # role, index and pgid are set per worker
    mechanism: Any  # the mechanism's class
    slots: Any  # the set's board
    wakes: tuple[Connection, Connection]  # read ends of the counters' and printers' stop pipes
    out: Connection  # the printers' output pipe (write end)
    orders: tuple[Order, ...]


class _Recorder:
    """Stands in for a spawning Popen while pickling: notes each descriptor that a
    spawned process would have been sent (multiprocessing.reduction.DupFd)."""

    def __init__(self) -> None:
        self.fds: set[int] = set()

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.add(fd)
        return fd

    def DupFd(self, fd: int) -> int:  # multiprocessing's name
        return fd


def fds_of(obj: Any) -> set[int]:
    """The descriptors that starting a process with ``obj`` as an argument would send.
    What cannot be pickled (made in a fork context) is looked into if it is a tuple or
    list; a descriptor nobody is found to own stays with every worker, as under fork."""
    recorder = _Recorder()
    mp_context.set_spawning_popen(recorder)  # type: ignore[arg-type]
    try:
        _record(obj)
    finally:
        mp_context.set_spawning_popen(None)
    return recorder.fds


def _record(obj: Any) -> None:
    try:
        ForkingPickler.dumps(obj)
    except Exception:
        if isinstance(obj, tuple | list):
            for item in obj:
                _record(item)


def report(conn: Connection, kind: int, a: int = 0, b: int = 0, c: int = 0) -> None:
    """One record to labd (atomic: far under PIPE_BUF); labd gone: nothing to tell."""
    with contextlib.suppress(OSError):
        os.write(conn.fileno(), RECORD.pack(kind, a, b, c))


def run(plan: Plan, conn: Connection) -> None:
    """The launcher process: fork every worker of ``plan``, then reap them."""
    if plan.template.cgroup:  # first thing: its workers are born in the set's cgroup
        try:
            worker_process.join_cgroup(plan.template.cgroup)
        except OSError as exc:
            report(conn, FAILED, exc.errno or 1, 0)
            return
        plan = replace(plan, template=replace(plan.template, cgroup=""))
    own_group = worker_process.join_set_group(plan.template.pgid)
    pgid = os.getpgrp() if own_group else NO_GROUP
    common = {plan.out.fileno(), *(w.fileno() for w in plan.wakes), *fds_of(plan.slots)}
    owned = [fds_of(order.args) - common for order in plan.orders]
    every = set().union(*owned)
    # Everything is made before the first fork: after each fork, every page the launcher
    # writes to is copied (copy-on-write), so the loop below touches as little as it can.
    workers = [_worker(plan, order, pgid) for order in plan.orders]
    drops = [sorted(every - mine | {conn.fileno()}) for mine in owned]
    started: list[int] = []
    failed = 0
    for order, worker, drop in zip(plan.orders, workers, drops, strict=True):
        try:
            pid = _fork(worker, drop, plan.template.nice)
        except OSError as exc:  # EAGAIN at the process limit, ENOMEM
            failed = exc.errno or 1
            break
        started.append(pid)
        report(conn, STARTED, ROLES.index(order.role), order.index, pid)
    if failed:
        report(conn, FAILED, failed, len(started))
    else:
        report(conn, DONE, len(started))
    del workers, drops
    _let_go(every | common)  # what labd sent is the workers' now (EOFs depend on it)
    _reap(started, plan.template.daemon_pid, own_group, conn)


def _worker(plan: Plan, order: Order, pgid: int) -> multiprocessing.process.BaseProcess:
    """A worker as multiprocessing runs a forked Process (finalizers, exit code,
    traceback), to be forked by hand (see _fork)."""
    spec = replace(plan.template, role=order.role, index=order.index, pgid=pgid)
    return multiprocessing.Process(
        target=worker_process.run,
        args=(
            spec,
            plan.mechanism,
            plan.slots,
            plan.wakes[ROLES.index(spec.role)],
            plan.out,
            order.args,
        ),
        name=f"ipclab-{spec.set_id}-{order.role}-{order.index}",
        daemon=True,
    )


def _fork(worker: multiprocessing.process.BaseProcess, drop: list[int], nice: int) -> int:
    """Fork one worker; in it, drop the descriptors that are not its own, take the
    set's niceness (the launcher keeps labd's priority: it forks the next one sooner)
    and run it."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        if nice:
            with contextlib.suppress(OSError):
                os.nice(nice)
        for fd in drop:
            with contextlib.suppress(OSError):
                os.close(fd)
        code = worker._bootstrap()  # type: ignore[attr-defined]
    finally:
        os._exit(code)


def _let_go(fds: set[int]) -> None:
    """Release descriptors in the launcher without freeing their numbers (the objects
    holding them stay): each becomes /dev/null."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


def _reap(children: list[int], daemon_pid: int, own_group: bool, conn: Connection) -> None:
    """Report each worker's exit as it happens; end the group if labd dies first."""
    sel = selectors.DefaultSelector()
    try:
        labd = os.pidfd_open(daemon_pid) if daemon_pid else -1
    except OSError:
        worker_process.daemon_gone(own_group)
    if labd >= 0:
        sel.register(labd, selectors.EVENT_READ, 0)
    for pid in children:
        try:
            sel.register(os.pidfd_open(pid), selectors.EVENT_READ, pid)
        except OSError:  # cannot watch it: wait for it below, blocking, at the end
            continue
    left = set(children)
    while left and len(sel.get_map()) > (1 if labd >= 0 else 0):
        for key, _ in sel.select():
            if key.data == 0:
                worker_process.daemon_gone(own_group)
            sel.unregister(key.fd)
            os.close(key.fd)
            _reaped(key.data, conn)
            left.discard(key.data)
    for pid in left:
        _reaped(pid, conn)


def _reaped(pid: int, conn: Connection) -> None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return
    report(conn, EXITED, pid, os.waitstatus_to_exitcode(status))
