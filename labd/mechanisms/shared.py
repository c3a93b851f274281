"""``shared``: the lesson's ``multiprocessing.Value`` in shared memory.

The Value is created with ``lock=True``, as in the lesson, and the counters still race:
``v.value += 1`` takes the Value's lock once to read and once more to write, so two
counters can read the same number and one increment is lost. With ``lock=yes`` each
increment runs under ``v.get_lock()``, which makes it exact.

Readers (the printers and the daemon's sampler) load the raw 8-byte value without the
lock: an aligned load is atomic, and a reader must never block on a lock that a killed
counter left held.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labd.mechanisms.base import Mechanism, SetupEnv
from labd.mechanisms.observed import TRACE, WINDOW, Observed, window_of, writer
from labd.params import Param
from labd.worker.contexts import CounterContext, PrinterContext


class SharedValue(Observed, Mechanism):
    """A ``multiprocessing.Value('q')`` every counter increments in place."""

    name = "shared"
    summary = "multiprocessing.Value in shared memory; value += 1 races unless lock=yes"
    params = (
        Param(
            "lock",
            bool,
            False,
            "increment under the Value's lock (no: the read and the write each take it "
            "separately, so concurrent increments are lost)",
        ),
        WINDOW,
        TRACE,
    )
    messages = False

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._value: Any = None

    def setup(self, env: SetupEnv) -> None:
        self._value = env.context.Value("q", 0)  # lock=True, as in the lesson
        self.setup_trace(env, self.values)

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return (self._value, self.trace_arg(index))

    def printer_args(self, index: int) -> tuple[Any, ...]:
        return (self._value,)

    def observe(self) -> int | None:
        value = self._value  # one read: teardown may drop it meanwhile
        return None if value is None else int(value.get_obj().value)

    def teardown(self) -> None:
        self._value = None
        self.keep_trace()

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        v, traced = args
        lock = v.get_lock() if ctx.values.get("lock", False) else None
        ctx.increment(v, lock, window=window_of(ctx), trace=writer(ctx, traced))

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (v,) = args
        raw = v.get_obj()
        show = ctx.show
        for _ in ctx.ticks(phase=0.5):
            show(raw.value)
