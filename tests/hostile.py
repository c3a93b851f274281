"""Plugins that misbehave on purpose, for the fault tests of labd (issue 11).

Registered like :mod:`fakes`, through ``LABD_EXTRA_MECHANISMS`` (see :data:`EXTRA`).
Each one breaks one promise a plugin should keep: helpers that escape their set, hooks
that hang in the daemon, modules that end the interpreter at import.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from fakes import FakeCounter

from labd import CounterContext, Param, SetupEnv

ESCAPES = ("fork", "setsid", "double_fork", "scrubbed")


def _write_pid(piddir: str, name: str) -> None:
    path = os.path.join(piddir, name)
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)  # whole, or not there


def _helper(escape: str, piddir: str, name: str) -> None:
    """In a fresh child of the counter: become the helper ``escape`` names (never returns)."""
    try:
        if escape in ("double_fork", "scrubbed") and os.fork():
            os._exit(0)  # the middle process: its child is orphaned at once
        if escape != "fork":
            os.setsid()  # out of the set's process group and session
        _write_pid(piddir, name)
        if escape == "scrubbed":  # exec'd with an empty environment: no marker at all
            os.execve("/bin/sleep", ["sleep", "600"], {})
        os.environ["IPCLAB_SET"] = "scrubbed-by-the-helper"  # never visible in /proc anyway
        time.sleep(600)
    finally:
        os._exit(0)


class EscapingCounter(FakeCounter):
    """Counter 0 starts a helper process that tries to outlive the set."""

    name = "escaping"
    summary = "counter 0 starts a helper that escapes the set (tests only)"
    params = (
        Param("escape", str, "fork", "how the helper escapes", choices=ESCAPES),
        Param("piddir", str, "", "directory where the helper writes its pid"),
    )

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        if ctx.index == 0:
            escape, piddir = str(ctx.values["escape"]), str(ctx.values["piddir"])
            pid = os.fork()
            if pid == 0:
                _helper(escape, piddir, f"helper-{ctx.spec.set_id}")
            if escape in ("double_fork", "scrubbed"):
                os.waitpid(pid, 0)
        super().counter(ctx, *args)


def _forever() -> None:
    threading.Event().wait()


class HangingObserve(FakeCounter):
    """observe() never returns once the set has started."""

    name = "hang_observe"
    summary = "observe() hangs (tests only)"
    params = ()

    def started(self) -> None:
        self._hang = True

    def observe(self) -> int | None:
        if getattr(self, "_hang", False):
            _forever()
        return super().observe()


class HangingSetup(FakeCounter):
    name = "hang_setup"
    summary = "setup() hangs (tests only)"
    params = ()

    def setup(self, env: SetupEnv) -> None:
        _forever()


class HangingTeardown(FakeCounter):
    name = "hang_teardown"
    summary = "teardown() hangs (tests only)"
    params = ()

    def teardown(self) -> None:
        _forever()


#: modules that end the interpreter when imported, by the way named
EXITS_AT_IMPORT = {
    "exits_systemexit": "hostile_exit_systemexit",
    "exits_keyboard": "hostile_exit_keyboard",
    "exits_call": "hostile_exit_call",
}
#: name=module:Class entries for LABD_EXTRA_MECHANISMS (tests/ on PYTHONPATH)
HOOKS = ",".join(
    [
        "escaping=hostile:EscapingCounter",
        "hang_observe=hostile:HangingObserve",
        "hang_setup=hostile:HangingSetup",
        "hang_teardown=hostile:HangingTeardown",
    ]
)
EXITS = ",".join(f"{name}={module}:Anything" for name, module in EXITS_AT_IMPORT.items())
