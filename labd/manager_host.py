"""labd's Manager server: one ``SyncManager`` process that labd owns and watches.

It listens on a unix socket in a private (0700) directory, never TCP: its protocol is
pickle behind an authkey. If it dies, the sets that used it fail (their proxies cannot
reconnect) and the next set that asks for it gets a fresh one.
"""

from __future__ import annotations

import logging
import multiprocessing.context
import os
import shutil
import threading
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.managers import SyncManager
from pathlib import Path

from labd.bounded import HookTimeout, call_within
from labd.worker.process import watch_daemon

log = logging.getLogger("labd.manager")
SHUTDOWN_S = 3.0  # for the server to end when asked, before it is killed


def _init_server(daemon_pid: int) -> None:
    """Runs in the manager process: end with the daemon, ignore Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_daemon(daemon_pid)


class ManagerHost:
    """Starts, watches and restarts the Manager server process."""

    def __init__(
        self,
        directory: Path,
        context: multiprocessing.context.BaseContext,
        on_death: Callable[[int], None],
    ) -> None:
        self._dir = directory
        self._context = context
        self._on_death = on_death
        self._lock = threading.Lock()
        self._manager: SyncManager | None = None
        self.generation = 0
        self.restarts = 0

    def get(self) -> tuple[SyncManager, int]:
        """The running Manager and its generation, starting one if needed."""
        with self._lock:
            if self._manager is None:
                self._start()
            assert self._manager is not None
            return self._manager, self.generation

    def _start(self) -> None:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        self.generation += 1
        address = str(self._dir / f"manager-{os.getpid()}-{self.generation}.sock")
        manager = SyncManager(address=address, ctx=self._context)
        manager.start(initializer=_init_server, initargs=(os.getpid(),))
        self._manager = manager
        process = manager._process  # type: ignore[attr-defined]
        log.info("manager server started (pid %s, generation %d)", process.pid, self.generation)
        threading.Thread(
            target=self._watch, args=(process, self.generation), name="manager-watch", daemon=True
        ).start()

    def _watch(self, process: multiprocessing.process.BaseProcess, generation: int) -> None:
        wait([process.sentinel])
        with self._lock:
            current = self.generation == generation and self._manager is not None
            if current:
                self._manager = None
        if current:
            process.join(0)
            log.error("manager server (pid %s) died with code %s", process.pid, process.exitcode)
            self.restarts += 1
            self._on_death(generation)

    @property
    def pid(self) -> int | None:
        with self._lock:
            if self._manager is None:
                return None
            process: multiprocessing.process.BaseProcess = self._manager._process  # type: ignore[attr-defined]
            return process.pid

    def shutdown(self) -> None:
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            try:  # a stopped (SIGSTOP) or hung server never answers: bounded, then killed
                call_within(manager.shutdown, SHUTDOWN_S, "the Manager's shutdown")
            except HookTimeout as exc:
                log.warning("%s: killing it", exc)
                _kill(manager)
            except Exception as exc:  # already gone
                log.debug("manager shutdown: %s", exc)
        shutil.rmtree(self._dir, ignore_errors=True)


def _kill(manager: SyncManager) -> None:
    process = manager._process  # type: ignore[attr-defined]
    try:
        process.kill()
        process.join(1.0)
    except (OSError, ValueError) as exc:
        log.debug("killing the manager: %s", exc)
