"""labd's Manager server: one ``SyncManager`` process that labd owns and watches.

It listens on a unix socket in a private (0700) directory, never TCP: its protocol is
pickle behind an authkey. If it dies, the sets that used it fail (their proxies cannot
reconnect) and the next set that asks for it gets a fresh one.

It is forked by the forkserver, like the sets' processes. (A spawned server, a fresh
interpreter, served the 4-counter racy set ~15 % slower than a forked one:
bench/README.md, round 0.4.2.) It is watched through a pidfd of its own, not through
multiprocessing's sentinel, which for a forkserver child is the forkserver's pipe: a
dead forkserver must not look like a dead Manager. (labd is a subreaper, so the
orphaned server then comes back to labd, which reaps it.)
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing.context
import os
import select
import shutil
import signal
import threading
from collections.abc import Callable
from multiprocessing.managers import SyncManager
from pathlib import Path

from labd.bounded import HookTimeout, call_within
from labd.proclimit import limit_error
from labd.worker.process import watch_daemon

log = logging.getLogger("labd.manager")
SHUTDOWN_S = 3.0  # for the server to end when asked, before it is killed
JOIN_S = 1.0  # for the forkserver to report the exit status of a server that ended


def _init_server(daemon_pid: int) -> None:
    """Runs in the manager process: end with the daemon, ignore Ctrl-C."""
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
        try:
            manager.start(initializer=_init_server, initargs=(os.getpid(),))
        except (OSError, EOFError) as exc:  # under the forkserver, EAGAIN reads as EOF
            raise (limit_error(exc) or exc) from exc
        self._manager = manager
        process = _process(manager)
        log.info("manager server started (pid %s, generation %d)", process.pid, self.generation)
        threading.Thread(
            target=self._watch,
            args=(process, _pidfd(process), self.generation),
            name="manager-watch",
            daemon=True,
        ).start()

    def _watch(
        self, process: multiprocessing.process.BaseProcess, pidfd: int | None, generation: int
    ) -> None:
        if pidfd is not None:  # None: it ended before it could be watched
            _exited(pidfd, None)
            os.close(pidfd)
        with self._lock:
            current = self.generation == generation and self._manager is not None
            if current:
                self._manager = None
        if current:
            code = _exit_code(process)
            log.error("manager server (pid %s) died with code %s", process.pid, code)
            self.restarts += 1
            self._on_death(generation)

    @property
    def pid(self) -> int | None:
        with self._lock:
            if self._manager is None:
                return None
            return _process(self._manager).pid

    def shutdown(self) -> None:
        with self._lock:
            manager, self._manager = self._manager, None
        if manager is not None:
            process = _process(manager)
            pidfd = _pidfd(process)
            patience = SHUTDOWN_S
            try:  # a stopped (SIGSTOP) or hung server never answers: bounded, then killed
                call_within(manager.shutdown, SHUTDOWN_S, "the Manager's shutdown")
            except HookTimeout as exc:
                log.warning("%s", exc)
                patience = 0.0
            except Exception as exc:  # already gone
                log.debug("manager shutdown: %s", exc)
            if pidfd is not None:
                # multiprocessing asks only a server it believes alive, and it asks the
                # forkserver: with the forkserver gone it asks none. Make sure.
                _end(pidfd, process, patience)
        shutil.rmtree(self._dir, ignore_errors=True)


def _process(manager: SyncManager) -> multiprocessing.process.BaseProcess:
    process: multiprocessing.process.BaseProcess = manager._process  # type: ignore[attr-defined]
    return process


def _pidfd(process: multiprocessing.process.BaseProcess) -> int | None:
    """A pidfd of the server (readable once it has exited, whoever its parent is)."""
    assert process.pid is not None
    try:
        return os.pidfd_open(process.pid)
    except ProcessLookupError:
        return None


def _end(pidfd: int, process: multiprocessing.process.BaseProcess, patience: float) -> None:
    """Wait for the server to exit, within ``patience`` seconds, else kill it; reap it
    if it came back to labd."""
    try:
        if not _exited(pidfd, patience):
            log.warning("the Manager server (pid %s) did not end: killing it", process.pid)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            _exited(pidfd, SHUTDOWN_S)
    finally:
        os.close(pidfd)
    _exit_code(process)


def _exited(pidfd: int, timeout: float | None) -> bool:
    """Wait until the process has exited (None: however long). poll, not select: labd
    holds a pidfd per worker, and its fds go past select's 1024."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _exit_code(process: multiprocessing.process.BaseProcess) -> int | None:
    """The exit code of a server that has ended: labd's own word if the server came
    back to it (labd is a subreaper and the forkserver is gone), else the forkserver's."""
    assert process.pid is not None
    try:
        done, status = os.waitpid(process.pid, os.WNOHANG)
    except ChildProcessError:
        done = 0  # the forkserver's child, as it should be
    if done == process.pid:
        return os.waitstatus_to_exitcode(status)
    with contextlib.suppress(OSError, ValueError):
        process.join(JOIN_S)
    return process.exitcode
