"""``manager``: the lesson's server process, a Value held by labd's Manager.

Counters hold proxies (they pickle with the Manager's address and authkey and connect
again in the child). ``v.value += 1`` on a proxy is two round trips, a get and a set,
so concurrent counters overwrite each other's increments. With ``lock=yes`` each
increment runs under a Manager lock: exact, and four round trips.

The Manager is labd's, shared by every set that uses it: teardown only drops this set's
proxies and never shuts it down.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from labd.mechanisms.base import Mechanism, SetupEnv
from labd.mechanisms.observed import TRACE, WINDOW, Observed, window_of, writer
from labd.params import Param
from labd.worker.contexts import CounterContext, PrinterContext


class ManagerValue(Observed, Mechanism):
    """A Value in labd's Manager server, read and written through proxies."""

    name = "manager"
    summary = "a Value in a Manager server process; each access is a round trip"
    params = (
        Param(
            "lock",
            bool,
            False,
            "increment under a Manager lock (no: the read and the write are separate "
            "round trips, so concurrent increments are lost)",
        ),
        WINDOW,
        TRACE,
    )
    messages = False

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._value: Any = None
        self._lock: Any = None

    def setup(self, env: SetupEnv) -> None:
        mgr = env.manager()
        self._value = mgr.Value("q", 0)
        if self.values.get("lock", False):
            self._lock = mgr.Lock()
        self.setup_trace(env, self.values)

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return (self._value, self._lock, self.trace_arg(index))

    def printer_args(self, index: int) -> tuple[Any, ...]:
        return (self._value,)

    def observe(self) -> int | None:
        """The value now: one round trip on the calling thread's own connection.

        Raises (EOFError, OSError ...) if the Manager died: the set cannot go on.
        """
        value = self._value
        if value is None:
            return None
        return int(value.value)

    def teardown(self) -> None:
        # Dropping a proxy sends a decref; if the Manager is gone, multiprocessing logs
        # and swallows that failure, so this never raises.
        self._value = None
        self._lock = None
        self.keep_trace()

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        v, lock, traced = args
        with _server_lost("counter", ctx.index):
            ctx.increment(v, lock, window=window_of(ctx), trace=writer(ctx, traced))

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (v,) = args
        show = ctx.show
        with _server_lost("printer", ctx.index):
            for _ in ctx.ticks(phase=0.5):
                show(v.value)


@contextlib.contextmanager
def _server_lost(role: str, index: int) -> Iterator[None]:
    """In a worker: the Manager server going away (killed; labd fails the set) ends it
    with one line on stderr (labd's log) and exit code 1, not a traceback."""
    try:
        yield
    except (EOFError, ConnectionError) as exc:
        sys.stderr.write(f"{role} {index}: lost the Manager server: {type(exc).__name__}\n")
        sys.exit(1)
