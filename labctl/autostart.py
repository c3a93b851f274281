"""Start labd in the background when nobody answers at the default local socket.

Only for the default socket, never for an address the user named (the caller decides,
see :class:`labctl.target.Target`). Two labctl starting at once start one daemon: the
start runs under an ``flock`` on a file beside the socket, and whoever gets the lock
second finds the daemon the first one started.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from labctl.client import Client, connect, unreachable
from labctl.target import Target
from labd.errors import ConnectError
from labd.protocol import default_state_dir

LOCK_NAME = "labd.autostart.lock"
#: the installed labd, never one from the working directory: -P keeps the current
#: directory off sys.path (PYTHONPATH and the user's site-packages still count), and the
#: daemon runs from ``/`` (see :data:`START_DIR`)
DAEMON_COMMAND = (sys.executable, "-P", "-m", "labd")
START_DIR = "/"
LOG_NAME = "labd.log"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Launch:
    """How to start the daemon and how long to wait for it (tests pass their own)."""

    command: Sequence[str] = DAEMON_COMMAND
    deadline: float = 10.0
    interval: float = 0.05
    log_dir: Path | None = None  # default: labd.protocol.default_state_dir()
    say: Callable[[str], None] = _stderr


def open_client(
    target: Target, *, allow_start: bool = True, launch: Launch | None = None
) -> Client:
    """A client for ``target``, starting labd first if the target allows it and it is absent."""
    try:
        return connect(target.address, target.tls, target.timeout)
    except ConnectError as exc:
        if not (target.autostart and allow_start and nobody_listens(exc)):
            raise
    return start_daemon(target, launch or Launch())


def nobody_listens(exc: ConnectError) -> bool:
    """Whether the socket is missing or stale, as opposed to a daemon that misbehaves."""
    return isinstance(exc.__cause__, FileNotFoundError | ConnectionRefusedError)


def start_daemon(target: Target, launch: Launch) -> Client:
    """Start labd unless someone else just did, and return a client once it answers."""
    assert target.address.path is not None, "autostart is for the local socket only"
    lock_path = Path(target.address.path).parent / LOCK_NAME
    with _locked(lock_path):
        try:
            return _answering(target)  # another labctl may have started it meanwhile
        except ConnectError as exc:
            if not nobody_listens(exc):
                raise
        return _launch(target, launch)


def _launch(target: Target, launch: Launch) -> Client:
    log_dir = launch.log_dir or default_state_dir()
    log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = log_dir / LOG_NAME
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(launch.command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=START_DIR,  # nothing of the user's directory is imported or kept busy
        )
    client = _await(proc, target, launch, log_path)
    # labd outlives this labctl; while we run, reap it if it ends (a REPL session may be
    # long), and hold the Popen so that it is not collected as a leaked child
    threading.Thread(target=proc.wait, name="reap-labd", daemon=True).start()
    launch.say(f"started labd in the background (pid {proc.pid})\nits log: {log_path}")
    return client


def _await(proc: subprocess.Popen[bytes], target: Target, launch: Launch, log: Path) -> Client:
    """Poll until the new daemon answers ``version()``, it exits, or the deadline passes."""
    deadline = time.monotonic() + launch.deadline
    while True:
        code = proc.poll()
        if code is not None:
            raise unreachable(target.address, f"labd exited at start with code {code} (log: {log})")
        try:
            return _answering(target, timeout=min(target.timeout, 1.0))
        except ConnectError:
            if time.monotonic() >= deadline:
                raise unreachable(
                    target.address,
                    f"labd (pid {proc.pid}) did not answer within {launch.deadline:g} s "
                    f"after start (log: {log})",
                ) from None
        time.sleep(launch.interval)


def _answering(target: Target, timeout: float | None = None) -> Client:
    """A client whose daemon has answered ``version()``."""
    client = connect(target.address, target.tls, timeout or target.timeout)
    try:
        client.version()
    except BaseException:
        client.close()
        raise
    return client


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConnectError(f"cannot start labd: cannot create {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
