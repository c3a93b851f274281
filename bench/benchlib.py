"""What the benchmarks share: the machine line, the installed console scripts, and a
private labd in a temporary directory.

Standard library only at the top: the benchmarks' modules are re-imported by every
forkserver child (Python 3.11 does not preload ``__main__``), and so is this one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def forkserver(preload: bool) -> multiprocessing.context.BaseContext:
    """The forkserver context, preloading what labd's does if asked."""
    ctx = multiprocessing.get_context("forkserver")
    if preload:
        from labd.lab import forkserver_preload
        from labd.registry import Registry

        registry = Registry()
        registry.load_all()
        ctx.set_forkserver_preload(forkserver_preload(registry))
    return ctx


def machine() -> dict[str, Any]:
    """The machine a run is on, for the header line and the JSON."""
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def script(name: str) -> str:
    """The console script of this interpreter's installation (not a shim on PATH)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{Path(sys.argv[0]).stem}: {name} is not installed (pip install -e .)")
    return found


def own_session(script: str, flag: str) -> int | None:
    """Run ``script`` again (same arguments) as the leader of a new session, and return
    its exit code; None when this already is that run.

    With the kernel's autogroup scheduling (``/proc/sys/kernel/sched_autogroup_enabled``)
    the CPUs are shared fairly between sessions, then between the processes of each: a
    baseline and labd's sets measured side by side must run in one session (the
    benchmark's own, started afresh here so that the caller's shell crowds neither).
    """
    if os.environ.get(flag) or os.getsid(0) == os.getpid():
        return None
    command = [sys.executable, os.path.abspath(script), *sys.argv[1:]]
    child = subprocess.Popen(command, env={**os.environ, flag: "1"}, start_new_session=True)
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()


class PrivateLabd:
    """A labd on a socket and state dir in a temporary directory of its own, with a
    plain rpyc client (``conn``) once :meth:`start` returns; :meth:`close` kills what
    is left and removes the directory."""

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.socket = self.dir / "labd.sock"
        self.log = self.dir / "labd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Any = None

    def start(
        self,
        new_session: bool = True,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start labd, in a session of its own unless ``new_session`` is False (then in
        ours: what it is compared with side by side must share its session, see
        :func:`own_session`), with ``args`` more options and ``env`` more variables."""
        from rpyc.utils.factory import unix_connect

        command = [sys.executable, "-m", "labd", "--socket", str(self.socket)]
        command += ["--state-dir", str(self.dir / "state"), *args]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                env={**os.environ, **(env or {})},
                cwd=self.dir,  # import the installed labd, or PYTHONPATH's, not ./labd
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,  # a Ctrl-C reaches us only; we stop labd
            )
        deadline = time.monotonic() + 20
        while self.conn is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"labd exited with {self.proc.returncode}: {self.tail()}")
            try:
                self.conn = unix_connect(str(self.socket), config={"sync_request_timeout": 120})
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"labd did not answer: {self.tail()}") from None
                time.sleep(0.05)
        return self.proc

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 3) -> str:
        """The end of labd's log, on one line."""
        text = self.log_text()
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def disconnect(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def close(self) -> None:
        """Disconnect, stop labd (SIGTERM: it ends its sets) and remove the directory."""
        self.disconnect()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        self.remove()


def shuffled_rounds(
    run: Callable[[str], T],
    variants: Sequence[str],
    rounds: int,
    seed: int,
    rate: Callable[[T], float],
) -> dict[str, list[T]]:
    """Every variant once a round, in an order shuffled by ``seed`` (so a drift of the
    host hits them alike); each round's rates on stderr as it ends."""
    rng = random.Random(seed)
    out: dict[str, list[T]] = {v: [] for v in variants}
    for i in range(rounds):
        order = list(out)
        rng.shuffle(order)
        for variant in order:
            out[variant].append(run(variant))
        done = ", ".join(f"{v} {rate(out[v][-1]):.0f}" for v in variants)
        print(f"round {i + 1}/{rounds}: {done}", file=sys.stderr, flush=True)
    return out
