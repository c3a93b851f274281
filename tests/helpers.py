"""Test helpers: polling with a deadline, and a real ``labd`` in a subprocess.

Nothing here replaces a component of ours: :class:`Daemon` runs the installed ``labd``
command, and :func:`connect` is the plain rpyc client any script would use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psutil
import rpyc
from rpyc.utils.factory import unix_connect

import labd.errors  # noqa: F401 - remote errors arrive as labd.errors classes
from labd.testing import running

T = TypeVar("T")
TESTS = Path(__file__).resolve().parent
CLIENT_CONFIG = {"instantiate_custom_exceptions": True, "sync_request_timeout": 60}
#: every process this test session starts carries this variable (see conftest.py)
SESSION_VAR = "IPCLAB_TEST_SESSION"


def wait_for(predicate: Callable[[], T], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        time.sleep(every)


_SHORT_DIRS: list[Path] = []


def short_dir() -> Path:
    """A private directory with a short path (unix socket paths must be < 108 bytes);
    removed at the end of the session (:func:`remove_short_dirs`)."""
    path = Path(tempfile.mkdtemp(prefix="ipl"))
    _SHORT_DIRS.append(path)
    return path


def mounts_in_short_dirs() -> list[str]:
    """Mount points inside this session's short directories (a test left them mounted)."""
    roots = tuple(f"{d}/" for d in _SHORT_DIRS)
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [p for p in (line.split()[4] for line in lines) if p.startswith(roots)]


def remove_short_dirs() -> None:
    while _SHORT_DIRS:
        shutil.rmtree(_SHORT_DIRS.pop(), ignore_errors=True)


def console_script(name: str) -> list[str]:
    """The installed console script ``name`` of this interpreter (not a pyenv shim)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    found = shutil.which(name)
    assert found, f"{name} is not installed (pip install -e .)"
    return [found]


def labd_command() -> list[str]:
    return console_script("labd")


def labctl_command() -> list[str]:
    return console_script("labctl")


def connect(path: str | Path) -> rpyc.Connection:
    return unix_connect(str(path), config=dict(CLIENT_CONFIG))


def one_line(exc: BaseException) -> str:
    """The message labd meant (first argument), checked to be one non-empty line."""
    assert exc.args, f"{type(exc).__name__} has no message"
    text = exc.args[0]
    assert isinstance(text, str) and text.strip(), f"empty message: {exc!r}"
    assert "\n" not in text.strip(), f"message is not one line: {text!r}"
    assert "Traceback" not in text
    return text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def describe(procs: Iterable[psutil.Process]) -> str:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            out.append(f"{p.pid} (gone)")
    return "; ".join(out) or "none"


def kill_all(procs: Iterable[psutil.Process]) -> None:
    for p in running(procs):
        with contextlib.suppress(psutil.Error):
            p.kill()


class Daemon:
    """A real ``labd`` subprocess on a unix socket in a fresh short directory."""

    def __init__(
        self,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        state_dir: Path | None = None,
        root: Path | None = None,
        socket_name: str = "labd.sock",
        wrapper: Sequence[str] = (),
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.root = root or short_dir()
        self.socket = str(self.root / socket_name)
        self.state_dir = state_dir or (self.root / "state")
        self.log_path = self.root / f"labd-{time.monotonic_ns()}.log"
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, psutil.Process] = {}  # every descendant ever observed
        self.returncode: int | None = None
        self.allow_tracebacks = False
        self.wrapper = list(wrapper)  # a command that execs labd (e.g. setpriv ...)
        self.preexec = preexec  # run in the child before labd (e.g. setrlimit, setuid)

    # --- life ------------------------------------------------------------------------
    def start(self, wait: bool = True) -> Daemon:
        cmd = [
            *self.wrapper,
            *labd_command(),
            "--socket",
            self.socket,
            "--state-dir",
            str(self.state_dir),
            *self.args,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> dict[str, Any]:
        def answers() -> dict[str, Any] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"labd exited with {self.proc.returncode} before it "
                    f"answered:\n{self.log_text()}"
                )
            try:
                conn = connect(self.socket)
            except OSError:
                return None
            try:
                return json.loads(conn.root.version())  # type: ignore[no-any-return]
            finally:
                conn.close()

        info = wait_for(answers, timeout, f"labd to answer version() at {self.socket}")
        assert self.proc is not None
        assert info["pid"] == self.proc.pid
        self.track()
        return info

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def connect(self) -> rpyc.Connection:
        return connect(self.socket)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def track(self) -> list[psutil.Process]:
        """Record the daemon's descendants now (forkserver, its children, Manager ...)."""
        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in kids:
            self.seen.setdefault(p.pid, p)
        return kids

    def descendants(self) -> list[psutil.Process]:
        """Every descendant seen so far that still runs."""
        self.track()
        return running(self.seen.values())

    def send(self, sig: int) -> None:
        self.track()
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"labd (pid {self.pid}) did not exit within {timeout} s:\n{self.log_text()}"
            ) from None
        return self.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal labd and wait for it; return its exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.send(sig)
        return self.wait(timeout)

    def assert_no_leftovers(self, timeout: float = 5.0) -> None:
        """After labd exited: none of its descendants may survive it (kill them if so)."""
        left: list[psutil.Process] = []

        def gone() -> bool:
            nonlocal left
            left = running(self.seen.values())
            return not left

        try:
            wait_for(gone, timeout, "labd's children to end after it exited")
        except AssertionError:
            kill_all(left)
            raise AssertionError(f"processes outlived labd: {describe(left)}") from None

    def kill_everything(self) -> None:
        """Last resort at teardown: nothing we started may stay behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.track()
            self.proc.kill()
            self.proc.wait(10)
        kill_all(self.seen.values())

    def assert_clean_log(self) -> None:
        if not self.allow_tracebacks:
            text = self.log_text()
            assert "Traceback" not in text, f"labd logged a traceback:\n{text}"


def stop_own_multiprocessing_helpers(timeout: float = 5.0) -> list[str]:
    """End the forkserver and resource tracker that in-process Lab tests started in
    this (pytest) process; they would otherwise live until pytest exits.

    Their ``_stop()`` waits for the process without a bound, and the resource tracker
    only ends once every process holding its pipe has closed it: a leftover worker
    would hang the session here. So each stop gets ``timeout`` seconds, then SIGKILL;
    returns what went wrong.
    """
    from multiprocessing import forkserver, resource_tracker

    problems = []
    for name, helper, pid_attr in (
        ("forkserver", forkserver._forkserver, "_forkserver_pid"),  # type: ignore[attr-defined]
        ("resource tracker", resource_tracker._resource_tracker, "_pid"),  # type: ignore[attr-defined]
    ):
        pid = getattr(helper, pid_attr, None)
        if pid is None:
            continue
        stopper = threading.Thread(target=helper._stop, name=f"stop {name}", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            problems.append(
                f"this process's {name} (pid {pid}) did not end within "
                f"{timeout} s: some process still holds it"
            )
            sigkill(pid)
            stopper.join(timeout)
    return problems


def in_child_as(uid: int, gid: int, groups: Sequence[int], work: Callable[[], bytes]) -> bytes:
    """``work()`` in a forked child running as ``uid``/``gid``/``groups`` (no exec, so no
    interpreter file it would need to read): the bytes it returned. The child ends with
    ``os._exit`` whatever ``work`` does; ``work`` should turn its own errors into bytes."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            os.write(w, work())
        finally:
            os._exit(0)
    os.close(w)
    try:
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    return b"".join(chunks)


def sigkill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
