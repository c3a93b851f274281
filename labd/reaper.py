"""The one thread that notices children end: ``multiprocessing.connection.wait`` on
their sentinels (never a ``waitpid(-1)`` SIGCHLD handler), so an unexpected death is
seen at once, with its exit code."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from labd.processset import ProcessSet, Worker

log = logging.getLogger("labd.reaper")


class Reaper:
    def __init__(self, on_exit: Callable[[ProcessSet, Worker], None]) -> None:
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[ProcessSet, Worker]] = {}  # sentinel -> owner
        self._wake_r, self._wake_w = os.pipe()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, pset: ProcessSet, worker: Worker) -> None:
        with self._lock:
            self._watched[worker.process.sentinel] = (pset, worker)
        os.write(self._wake_w, b"w")

    def _run(self) -> None:
        while not self._closing:
            with self._lock:
                sentinels: list[Any] = list(self._watched)
            ready = wait([self._wake_r, *sentinels])
            for fd in ready:
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
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

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._closing = True
        os.write(self._wake_w, b"q")
        self._thread.join(timeout=2)
