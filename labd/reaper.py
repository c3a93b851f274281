"""The one thread that notices children end: ``multiprocessing.connection.wait`` on
their sentinels (never a ``waitpid(-1)`` SIGCHLD handler), so an unexpected death is
seen at once, with its exit code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from labd.loopthread import LoopThread
from labd.processset import ProcessSet, Worker

log = logging.getLogger("labd.reaper")


class Reaper(LoopThread):
    def __init__(self, on_exit: Callable[[ProcessSet, Worker], None]) -> None:
        super().__init__("reaper")
        self._on_exit = on_exit
        self._watched: dict[int, tuple[ProcessSet, Worker]] = {}  # sentinel -> owner

    def watch(self, pset: ProcessSet, worker: Worker) -> None:
        with self._lock:
            self._watched[worker.process.sentinel] = (pset, worker)
        self._wake()

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                sentinels: list[Any] = list(self._watched)
            ready = wait([self._wake_r, *sentinels])
            for fd in ready:
                if fd == self._wake_r:
                    self._drain_wake()
                    continue
                with self._lock:
                    pset, worker = self._watched.pop(int(fd))  # type: ignore[arg-type]
                self._reap(pset, worker)

    def _reap(self, pset: ProcessSet, worker: Worker) -> None:
        worker.process.join()
        worker.exitcode = worker.process.exitcode
        worker.process.close()
        worker.ended.set()
        try:
            self._on_exit(pset, worker)
        except Exception:
            log.exception("set %d: handling the exit of pid %d", pset.spec.id, worker.pid)
