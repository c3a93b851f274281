"""What the racy mechanisms (``shared``, ``manager``) add to the lesson's counter:
``window=SECONDS``, the time a counter holds the value between its read and its write,
and ``trace=yes``, a ring of each counter's increments labd reads to explain each lost
update (see :mod:`labd.worker.trace` and :mod:`labd.explain`).

A plugin opts in the same way: declare ``WINDOW`` and ``TRACE`` among its params, mix in
:class:`Observed`, call :meth:`Observed.setup_trace` in ``setup``, hand
:meth:`Observed.trace_arg` to its counters and call ``ctx.increment(value, lock,
window=..., trace=writer(ctx, arg))`` in its counter loop.
"""

from __future__ import annotations

import time
from typing import Any

from labd.params import Param
from labd.worker import board
from labd.worker import trace as ring
from labd.worker.contexts import CounterContext

WINDOW = Param(
    "window",
    float,
    0.0,
    "seconds a counter holds the value between its read and its write (0: the lesson's "
    "own code; a window makes the race show at any pace, every time)",
    min=0.0,
    max=10.0,
)
TRACE = Param(
    "trace",
    bool,
    False,
    "record each counter's last increments (read time, value read, write time) for "
    "labctl explain; costs two clock reads and a few stores per increment",
)


class Observed:
    """The trace ring of a set: made in the daemon, written by counters, read by labd."""

    _ring: Any = None
    _depth: int = 0
    _counters: int = 0
    _kept: dict[str, Any] | None = None

    def setup_trace(self, env: Any, values: dict[str, Any]) -> None:
        if not values.get("trace", False):
            return
        self._counters = env.counters
        self._depth = ring.depth_for(env.counters)
        self._ring = env.context.RawArray("q", ring.size(env.counters, self._depth))

    def trace_arg(self, index: int) -> tuple[Any, int, int] | None:
        return None if self._ring is None else (self._ring, index, self._depth)

    def trace(self) -> dict[str, Any] | None:
        """Each counter's traced increments (oldest first), or None without trace=yes."""
        return self._kept if self._kept is not None else self._read()

    def _read(self) -> dict[str, Any] | None:
        """``written`` is read first: a ring whose records start later than all it
        wrote lost its oldest ones (to the ring, or to the counter going on)."""
        if self._ring is None:
            return None
        view = board.view(self._ring)
        taken_ns = time.monotonic_ns()  # every write before it is in (or on its way)
        records = ring.read(view, self._counters, self._depth)
        count = ring.written(view, self._counters, self._depth)
        return {"depth": self._depth, "written": count, "records": records, "taken_ns": taken_ns}

    def keep_trace(self) -> None:
        """At teardown: keep what the ring holds, let go of the shared memory."""
        if self._ring is not None:
            self._kept = self._read()
            self._ring = None


def writer(ctx: CounterContext, arg: tuple[Any, int, int] | None) -> ring.TraceWriter | None:
    """The counter's writer for :meth:`Observed.trace_arg`'s argument (None: no trace)."""
    if arg is None:
        return None
    array, index, depth = arg
    return ring.TraceWriter(board.view(array), index, depth)


def window_of(ctx: CounterContext) -> float:
    return float(ctx.values.get("window", 0.0) or 0.0)
