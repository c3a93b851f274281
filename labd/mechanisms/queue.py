"""``queue``: each increment is a message on a bounded ``multiprocessing.Queue``.

Counters put ``(sent_ns, payload)`` tuples; printers block on ``get()`` and count what
arrives, so the value is the total received and nothing is lost to a race. The queue is
bounded (``maxsize``): an unbounded one under flat-out counters buffers in the counters'
feeder threads instead of delivering (see PITFALLS).

A counter that returns flushes its feeder thread as it exits (multiprocessing joins the
feeder at process exit), so every message it put reaches the pipe. labd stops the
counters first; :meth:`QueueMessages.release_printers` then puts one ``None`` per printer
behind every message, and each printer returns at its ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from queue import Full
from typing import Any

from labd.mechanisms.base import Mechanism, SetupEnv
from labd.params import PAYLOAD, Param, maxsize_param
from labd.protocol import MAX_DRAIN_S
from labd.worker.contexts import LAT_EVERY, CounterContext, PrinterContext

_STALL_S = 1.0  # a full queue whose printers took nothing for this long is abandoned
_FEEDER_JOIN_S = 1.0  # a healthy feeder has long flushed the sentinels by teardown


class QueueMessages(Mechanism):
    """A bounded ``multiprocessing.Queue``: one message per increment."""

    name = "queue"
    summary = "multiprocessing.Queue, bounded: one message per increment, printers block on get"
    params = (
        PAYLOAD,
        maxsize_param("queue", "put() blocks", 1000000),
        Param(
            "printer",
            str,
            "blocking",
            "how printers wait: blocking get() (sleeps until a message comes), or the "
            "lesson's busy loop 'if not q.empty(): q.get()' (spins a core while it waits)",
            choices=("blocking", "busy"),
        ),
    )
    messages = True

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._queue: Any = None
        self._printers = 0

    def setup(self, env: SetupEnv) -> None:
        self._printers = env.printers
        self._queue = env.context.Queue(int(self.values.get("maxsize", 1000)))

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return (self._queue,)

    def printer_args(self, index: int) -> tuple[Any, ...]:
        return (self._queue,)

    def release_printers(self) -> None:
        """One ``None`` per printer, behind every message (the counters have exited).

        A full queue waits for the printers to drain it, as long as they make progress:
        printers that are gone or stuck must not hold up the daemon (labd ends them).
        """
        q = self._queue
        if q is None:
            return
        give_up = time.monotonic() + MAX_DRAIN_S  # for all the sentinels together
        for _ in range(self._printers):
            if not _put_while_draining(q, None, give_up):
                return

    def teardown(self) -> None:
        q, self._queue = self._queue, None
        if q is None:
            return
        q.cancel_join_thread()  # never let the daemon's own exit wait on this queue
        q.close()  # the feeder flushes what the daemon put (the sentinels), then ends
        feeder = getattr(q, "_thread", None)
        if feeder is not None:
            feeder.join(_FEEDER_JOIN_S)
            if feeder.is_alive():
                # Printers gone with the pipe full: closing the last read end fails the
                # feeder's write and it ends. (One waiting for the write lock of a counter
                # killed mid-send stays blocked: a daemon thread, nothing more.)
                q._reader.close()

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        (q,) = args
        data = b"x" * int(ctx.values.get("payload", 16))
        put = q.put
        batches, stamp = ctx.sends()  # paced: the tick each message was due at
        for n in batches:
            for _ in range(n):
                put((stamp(), data))

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (q,) = args
        get = q.get
        if ctx.values.get("printer") == "busy":
            _busy(ctx, q)
            return
        if ctx.interval > 0:  # paced: record every message as it comes
            received = ctx.received
            while (msg := get()) is not None:
                received(msg[0])
            return
        # Flat out: count locally and record LAT_EVERY messages at a time, with the
        # latency of the last one (the tally lags by at most LAT_EVERY - 1 messages).
        received_many, every = ctx.received_many, LAT_EVERY
        n = 0
        while (msg := get()) is not None:
            n += 1
            if n == every:
                received_many(n, (msg[0],))
                n = 0
        if n:
            received_many(n)


def _busy(ctx: PrinterContext, q: Any) -> None:
    """The lesson's section 3 printer: ``if not q.empty(): q.get()`` in a loop that never
    sleeps, so it burns a core while the counters sleep between ticks."""
    received, empty, get = ctx.received, q.empty, q.get
    while True:
        if not empty():
            msg = get()
            if msg is None:
                return
            received(msg[0])


def _put_while_draining(q: Any, item: object, give_up: float) -> bool:
    """Put ``item``, waiting while the queue is full but shrinking; False if it stalls,
    or at the monotonic instant ``give_up``."""
    before = -1
    while time.monotonic() < give_up:
        try:
            q.put(item, timeout=_STALL_S)
            return True
        except Full:
            pass
        except (ValueError, OSError):
            return False  # closed
        try:
            now = q.qsize()
        except NotImplementedError:  # no sem_getvalue (macOS): no way to see progress
            return False
        if 0 <= before <= now:
            return False
        before = now
    return False
