"""The one thread that notices children end: it waits on their pidfds (never a
``waitpid(-1)`` SIGCHLD handler), so an unexpected death is seen at once, with its exit
code. The pidfds stay registered in one selector (epoll), added as workers start
and removed as they end: starting a thousand workers costs a thousand registrations,
not a rebuilt wait list per worker."""

from __future__ import annotations

import logging
import os
import selectors
from collections.abc import Callable

from labd.loopthread import LoopThread
from labd.processset import ProcessSet, Worker

JOIN_S = 1.0

log = logging.getLogger("labd.reaper")


class Reaper(LoopThread):
    def __init__(self, on_exit: Callable[[ProcessSet, Worker], None]) -> None:
        super().__init__("reaper")
        self._on_exit = on_exit
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._watched: dict[int, tuple[ProcessSet, Worker]] = {}  # pidfd -> owner

    def watch(self, pset: ProcessSet, worker: Worker) -> None:
        fd = worker.pidfd  # readable once it exits, whoever its parent is by then
        with self._lock:
            self._watched[fd] = (pset, worker)
            self._sel.register(fd, selectors.EVENT_READ, fd)
        # epoll sees a registration at once, even while waiting; a poll-based selector
        # would not before its next wait. (A wake per worker costs the starting thread a
        # switch to the reaper and back, milliseconds each on a busy host.)
        if not isinstance(self._sel, selectors.EpollSelector):
            self._wake()

    def _run(self) -> None:
        while not self._closing:
            for key, _ in self._sel.select():
                if key.data is None:
                    self._drain_wake()
                    continue
                with self._lock:
                    self._sel.unregister(key.fd)
                    pset, worker = self._watched.pop(key.fd)
                self._reap(pset, worker)

    def close(self, timeout: float = 2.0) -> None:
        super().close(timeout)
        if not self.alive:
            self._sel.close()

    def _reap(self, pset: ProcessSet, worker: Worker) -> None:
        worker.exitcode = _exit_status(worker)
        worker.close_pidfd()
        worker.ended.set()
        try:
            self._on_exit(pset, worker)
        except Exception:
            log.exception("set %d: handling the exit of pid %d", pset.spec.id, worker.pid)


def _exit_status(worker: Worker) -> int | None:
    """The exit status of a worker that has ended (its pidfd said so), as its launcher
    reports it. If the launcher is gone, the worker became labd's own child (labd is a
    subreaper) and tells it itself. None if nobody can tell."""
    code = worker.launch.status(worker.pid, JOIN_S)
    return code if code is not None else _own_child_status(worker.pid)


def _own_child_status(pid: int) -> int | None:
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None  # not labd's child: the forkserver's word stands
    return os.waitstatus_to_exitcode(status) if done == pid else None
