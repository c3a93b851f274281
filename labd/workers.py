"""Process entry points of a set's workers (module level, so spawn and forkserver can
pickle them by reference). Kept light: the forkserver preloads it."""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from labd import board
from labd.contexts import CounterContext, PrinterContext, WorkerSpec

EXIT_DAEMON_GONE = 70


def watch_daemon(pid: int) -> None:
    """End this worker at once when the daemon is gone, whatever the worker is doing."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        os._exit(EXIT_DAEMON_GONE)  # already gone (or no pidfd): do not linger

    def wait() -> None:
        select.select([fd], [], [])
        os._exit(EXIT_DAEMON_GONE)

    threading.Thread(target=wait, name="daemon-watch", daemon=True).start()


def _prepare(spec: WorkerSpec, out: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on labd's terminal: labd stops us
    os.environ.pop("NOTIFY_SOCKET", None)
    os.environ.pop("WATCHDOG_USEC", None)
    os.environ.pop("WATCHDOG_PID", None)
    os.dup2(out.fileno(), 1)
    out.close()
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as we do
    if spec.daemon_pid:
        watch_daemon(spec.daemon_pid)


def run(
    spec: WorkerSpec,
    mechanism: Any,
    slots: Any,
    wake: Connection,
    out: Connection,
    args: tuple[Any, ...],
) -> None:
    """Run one counter or printer of a set."""
    _prepare(spec, out)
    view = board.view(slots)
    if spec.role == "counter":
        mechanism.counter(CounterContext(spec, view, wake), *args)
        return
    ctx = PrinterContext(spec, view, wake, messages=bool(mechanism.messages))
    try:
        mechanism.printer(ctx, *args)
    finally:
        ctx.finish()
