"""The one thread that notices children end: it waits on their sentinels (never a
``waitpid(-1)`` SIGCHLD handler), so an unexpected death is seen at once, with its exit
code. The sentinels stay registered in one selector (epoll), added as workers start
and removed as they end: starting a thousand workers costs a thousand registrations,
not a rebuilt wait list per worker."""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable

from labd.loopthread import LoopThread
from labd.processset import ProcessSet, Worker

log = logging.getLogger("labd.reaper")


class Reaper(LoopThread):
    def __init__(self, on_exit: Callable[[ProcessSet, Worker], None]) -> None:
        super().__init__("reaper")
        self._on_exit = on_exit
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._watched: dict[int, tuple[ProcessSet, Worker]] = {}  # sentinel -> owner

    def watch(self, pset: ProcessSet, worker: Worker) -> None:
        sentinel = worker.process.sentinel
        with self._lock:
            self._watched[sentinel] = (pset, worker)
            self._sel.register(sentinel, selectors.EVENT_READ, sentinel)
        self._wake()  # a poll-based selector would not see it before its next wait

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
        worker.process.join()
        worker.exitcode = worker.process.exitcode
        worker.process.close()
        worker.ended.set()
        try:
            self._on_exit(pset, worker)
        except Exception:
            log.exception("set %d: handling the exit of pid %d", pset.spec.id, worker.pid)
