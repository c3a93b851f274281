"""labd's Manager server: one ``SyncManager`` process that labd owns and watches.

It listens on a unix socket in a private (0700) directory, never TCP: its protocol is
pickle behind an authkey. If it dies, the sets that used it fail (their proxies cannot
reconnect) and the next set that asks for it gets a fresh one.

It is forked by the forkserver, like the sets' processes. (A spawned server, a fresh
interpreter, served the 4-counter racy set ~15 % slower than a forked one:
bench/README.md, round 0.4.3.) It is watched through a pidfd of its own, opened once as
it starts, not through multiprocessing's sentinel, which for a forkserver child is the
forkserver's pipe: a dead forkserver must not look like a dead Manager. (labd is a
subreaper, so the orphaned server then comes back to labd, which reaps it through that
pidfd; and multiprocessing, which believes it dead, asks it nothing at shutdown.)
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Server:
    """A running server: its pidfd is closed once, by whoever retires it (its watcher
    when it dies, or shutdown)."""

    manager: SyncManager
    process: multiprocessing.process.BaseProcess
    pidfd: int
    generation: int


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
        self._server: _Server | None = None
        self.generation = 0
        self.restarts = 0

    def get(self) -> tuple[SyncManager, int]:
        """The running Manager and its generation, starting one if needed."""
        with self._lock:
            if self._server is None:
                self._server = self._start()
            return self._server.manager, self._server.generation

    def _start(self) -> _Server:
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        self.generation += 1
        address = str(self._dir / f"manager-{os.getpid()}-{self.generation}.sock")
        manager = SyncManager(address=address, ctx=self._context)
        try:
            manager.start(initializer=_init_server, initargs=(os.getpid(),))
        except (OSError, EOFError) as exc:  # under the forkserver, EAGAIN reads as EOF
            raise (limit_error(exc) or exc) from exc
        process = _process(manager)
        assert process.pid is not None
        fds: list[int] = []
        try:  # (the server answered its address: the pid is still its own)
            fds.append(os.pidfd_open(process.pid))
            fds.append(os.dup(fds[0]))  # the watcher's own
            server = _Server(manager, process, fds[0], self.generation)
            threading.Thread(
                target=self._watch, args=(server, fds[1]), name="manager-watch", daemon=True
            ).start()
        except (OSError, RuntimeError) as exc:  # no fd or no thread left: an unwatched
            for fd in fds:  # server would fail its sets unseen
                os.close(fd)
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGKILL)
            raise (limit_error(exc) or exc) from exc
        log.info("manager server started (pid %s, generation %d)", process.pid, self.generation)
        return server

    def _watch(self, server: _Server, fd: int) -> None:
        try:
            _exited(fd, None)
        finally:
            os.close(fd)
        with self._lock:
            current = self._server is server
            if current:
                self._server = None
        if current:
            try:
                code = _exit_code(server)
            finally:
                os.close(server.pidfd)
            log.error("manager server (pid %s) died with code %s", server.process.pid, code)
            self.restarts += 1
            self._on_death(server.generation)

    @property
    def pid(self) -> int | None:
        server = self._server  # no lock: a start that hangs (a stopped forkserver) holds it
        return None if server is None else server.process.pid

    def shutdown(self) -> None:
        if not self._lock.acquire(timeout=SHUTDOWN_S):
            log.warning("the Manager server is still starting (is the forkserver stopped?)")
            shutil.rmtree(self._dir, ignore_errors=True)
            return  # what it starts watches labd, and ends with it
        try:
            server, self._server = self._server, None
        finally:
            self._lock.release()
        if server is not None:
            patience = SHUTDOWN_S
            try:  # a stopped (SIGSTOP) or hung server never answers: bounded, then killed
                call_within(server.manager.shutdown, SHUTDOWN_S, "the Manager's shutdown")
            except HookTimeout as exc:
                log.warning("%s", exc)
                patience = 0.0
            except Exception as exc:  # already gone
                log.debug("manager shutdown: %s", exc)
            try:
                _end(server, patience)
            finally:
                os.close(server.pidfd)
        shutil.rmtree(self._dir, ignore_errors=True)


def _process(manager: SyncManager) -> multiprocessing.process.BaseProcess:
    process: multiprocessing.process.BaseProcess = manager._process  # type: ignore[attr-defined]
    return process


def _end(server: _Server, patience: float) -> None:
    """Make sure the server has ended, and reap it if it came back to labd.

    multiprocessing asked it to end and joined it, unless it believed it dead: with the
    forkserver gone, it asks nothing. Then SIGTERM; if it has not ended within
    ``patience`` seconds, SIGKILL."""
    fd = server.pidfd
    if not _exited(fd, 0.0):
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not _exited(fd, patience):
            log.warning("the Manager server (pid %s) did not end: killing it", server.process.pid)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            _exited(fd, SHUTDOWN_S)
    _exit_code(server)


def _exited(pidfd: int, timeout: float | None) -> bool:
    """Wait until the process has exited (None: however long). poll, not select: labd
    holds a pidfd per worker, and its fds go past select's 1024."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def _exit_code(server: _Server) -> int | None:
    """The exit code of a server that has ended: labd's own word if the server came
    back to it (the forkserver is gone), else the forkserver's. A forkserver dying at
    the same time reports 255 for it, and the server comes back to labd a moment
    later: labd looks again after the forkserver's answer."""
    code = _reap(server.pidfd)
    if code is None:
        with contextlib.suppress(OSError, ValueError):
            server.process.join(JOIN_S)
        code = _reap(server.pidfd)
    return code if code is not None else server.process.exitcode


def _reap(pidfd: int) -> int | None:
    """Reap the process if it is labd's child and has ended (by its pidfd: never another
    child that reused its pid); its exit code, or None."""
    try:
        found = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None  # the forkserver's child
    if found is None:
        return None
    return found.si_status if found.si_code == os.CLD_EXITED else -found.si_status
