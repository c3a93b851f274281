"""What a mechanism's counter and printer loops get: pacing, tallies, printing, stop.

These objects live in the worker processes. A counter loop is written as::

    for n in ctx.batches():        # ends when the set stops
        for _ in range(n):
            value.value += 1

a message counter as ``batches, stamp = ctx.sends()`` (each message stamped with
``stamp()``, paced the tick it was due at), and a message printer as
``msg = q.get(); ctx.received(sent_ns)``. The context does the
accounting (each process writes only its own board slots), the pacing on absolute ticks,
the lesson's ``Time: N`` lines (at most 10 a second) and the stop protocol.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from labd.worker import board, pacing

_MIN_BATCH_S = 0.002
_MAX_BATCH_S = 0.02
_MAX_BATCH = 1 << 20
_PRECISE_S = 0.003
LAT_EVERY = 16


@dataclass(frozen=True)
class WorkerSpec:
    """Who a worker is, sent to it at start (picklable)."""

    set_id: int
    role: str  # "counter" or "printer"
    index: int
    counters: int
    printers: int
    values: dict[str, Any] = field(default_factory=dict)
    daemon_pid: int = 0
    #: the set's process group: 0 makes this worker its leader (the set's first)
    pgid: int = 0
    #: the set's cgroup (labd.cgroups), joined first thing; '' with process groups only
    cgroup: str = ""
    #: what each worker adds to its niceness once forked (labd --worker-nice)
    nice: int = 0
    #: the set's ticks are shifted by this fraction of its interval (pacing.set_phase)
    phase: float = 0.0

    @property
    def interval(self) -> float:
        return float(self.values.get("interval", 1.0))


class _Context:
    def __init__(self, spec: WorkerSpec, slots: memoryview, wake: Connection) -> None:
        self.spec = spec
        self.index = spec.index
        self.counters = spec.counters
        self.printers = spec.printers
        self.values = spec.values
        self.interval = spec.interval
        #: flat out, one message in LAT_EVERY gives its latency (an unbiased sample):
        #: timing every message costs ~0.1 us at each end, a tenth of a message's cost
        self.lat_every = LAT_EVERY if self.interval <= 0 else 1
        self._v = slots
        self._wake = wake

    @property
    def wake(self) -> Connection:
        """Readable once this role is asked to stop (add it to a ``wait()`` list)."""
        return self._wake

    def stopping(self) -> bool:
        """True once the daemon asked this role to stop (or is gone)."""
        return self._wake.poll()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True if asked to stop meanwhile."""
        return self._wake.poll(max(0.0, timeout))

    def sleep_until(self, due: float) -> bool:
        """Sleep until the monotonic instant ``due``; True if asked to stop meanwhile.

        The stop pipe is watched until just before ``due``, then a precise sleep
        (``clock_nanosleep``) lands every process of the set on the same instant, with no
        system call between waking and working: this is what makes the lesson's race
        visible at a slow tick.
        """
        coarse = due - time.monotonic() - _PRECISE_S
        if self._wake.poll(max(0.0, coarse)):  # at every tick, however short
            return True
        rest = due - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        return False  # a stop asked in the last instant is seen at the next tick

    def ticks(self, phase: float = 0.0, *, catch_up: bool = False) -> Iterator[float]:
        """Yield at each absolute tick (each 0.1 s when flat out), shifted by ``phase`` of
        an interval and the set's own phase (:func:`labd.worker.pacing.set_phase`), until
        asked to stop.

        A caller late past its next tick skips the ticks it missed, or with ``catch_up``
        is given each of them at once, in order (a message counter's schedule).
        """
        period = self.interval if self.interval > 0 else pacing.FLAT_OUT_DISPLAY
        phase += self.spec.phase
        k = pacing.next_index(period, phase=phase)
        while True:
            due = (k + phase) * period
            if self.sleep_until(due):
                return
            yield due
            k += 1
            if not catch_up:
                k = max(k, pacing.next_index(period, phase=phase))


class CounterContext(_Context):
    """A counter's view: ``batches()`` paces it and tallies every increment."""

    def __init__(self, spec: WorkerSpec, slots: memoryview, wake: Connection) -> None:
        super().__init__(spec, slots, wake)
        self._reserved = board.counter_slot(spec.index)
        self._done = self._reserved + 1
        self._due_ns = 0  # paced: the monotonic ns of the tick under way

    def batches(self) -> Iterator[int]:
        """How many increments to do now; ends when the set stops.

        Paced: one at each tick boundary, the same instant for every counter of the set.
        Flat out: batches sized to last a few milliseconds, so the tally and the stop
        check cost nothing measurable.
        """
        if self.interval > 0:
            yield from self._paced()
        else:
            yield from self._flat_out()

    def sends(self, *, wall: bool = False) -> tuple[Iterator[int], Callable[[], int]]:
        """A message counter's loop: its batches and the clock each message's send time
        is stamped with, in ns (``time.monotonic_ns``'s, or with ``wall`` the wall
        clock's, ``time.time_ns``, for stamps read on another host)::

            batches, stamp = ctx.sends()
            for n in batches:
                for _ in range(n):
                    q.put((stamp(), payload))

        Flat out, a stamp is the real send time. Paced, it is the tick the message was
        scheduled for, and a counter late past its ticks (descheduled, stopped, blocked
        on a full queue) sends the ticks it missed at once instead of skipping them: a
        stall shows as latency, not as fewer messages.
        """
        real: Callable[[], int] = time.time_ns if wall else time.monotonic_ns
        if self.interval <= 0:
            return self._flat_out(), real
        offset = time.time_ns() - time.monotonic_ns() if wall else 0
        return self._paced(catch_up=True), lambda: self._due_ns + offset

    def increment(
        self, target: Any, lock: Any = None, *, window: float = 0.0, trace: Any = None
    ) -> None:
        """The lesson's counter loop: ``target.value += 1`` until the set stops, racy
        (a read, then a write) or, given a ``lock``, each increment under it.

        ``window`` seconds are spent holding the value between the read and the write
        (``window=``: the race at the lesson's pace, every time); ``trace`` (a
        :class:`labd.worker.trace.TraceWriter`) records each increment after its write.
        """
        if trace is not None and lock is None and window <= 0:
            self._increment_traced(target, trace)
        elif window > 0 or trace is not None:
            self._increment_observed(target, lock, window, trace)
        elif lock is None:
            for n in self.batches():
                for _ in range(n):
                    target.value += 1
        else:
            for n in self.batches():
                for _ in range(n):
                    with lock:
                        target.value += 1

    def _increment_traced(self, target: Any, trace: Any) -> None:
        """The racy increment with each one recorded, inline: a method call per record
        cost as much as the increment itself (see bench/trace_cost.py)."""
        now = time.monotonic_ns
        v, head, first, end = trace.view, trace.head, trace.first, trace.end
        at, k = trace.at, trace.n
        try:
            for n in self.batches():
                for _ in range(n):
                    t_read = now()
                    value = target.value
                    target.value = value + 1
                    t_write = now()
                    v[at] = t_read
                    v[at + 1] = value
                    v[at + 2] = t_write
                    k += 1
                    v[head] = k
                    at += 3
                    if at == end:
                        at = first
        finally:
            trace.at, trace.n = at, k

    def _increment_observed(self, target: Any, lock: Any, window: float, trace: Any) -> None:
        """The read, the hold, the write, spelled out (timestamps outside the window)."""
        now, sleep = time.monotonic_ns, time.sleep
        record = trace.record if trace is not None else None
        for n in self.batches():
            for _ in range(n):
                if lock is not None:
                    lock.acquire()
                t_read = now()
                value = target.value
                if window > 0:
                    sleep(window)
                target.value = value + 1
                t_write = now()
                if lock is not None:
                    lock.release()
                if record is not None:
                    record(t_read, value, t_write)

    def _paced(self, catch_up: bool = False) -> Iterator[int]:
        v, r, d = self._v, self._reserved, self._done
        for due in self.ticks(catch_up=catch_up):
            self._due_ns = round(due * 1e9)
            v[r] += 1
            yield 1
            v[d] += 1

    def _flat_out(self) -> Iterator[int]:
        v, r, d = self._v, self._reserved, self._done
        n = 1
        clock = time.perf_counter
        while not self._wake.poll():
            v[r] += n
            t0 = clock()
            yield n
            v[d] += n
            dt = clock() - t0
            if dt < _MIN_BATCH_S and n < _MAX_BATCH:
                n *= 2
            elif dt > _MAX_BATCH_S and n > 1:
                n //= 2


class PrinterContext(_Context):
    """A printer's view: record what arrived, show the lesson's ``Time: N`` lines.

    Polling printers (shared memory, Manager) call :meth:`show` from a :meth:`ticks`
    loop. Message printers call :meth:`received` per message; a display thread then
    prints the set's total received at each tick, at most 10 lines a second.
    """

    def __init__(
        self, spec: WorkerSpec, slots: memoryview, wake: Connection, *, messages: bool
    ) -> None:
        super().__init__(spec, slots, wake)
        base = board.printer_slot(spec.counters, spec.index)
        self._received_slot = base
        self._corrupt_slot = base + 1
        self._shown_slot = base + 2
        self._hist = base + 4
        self._count = 0
        self._lat_mask = self.lat_every - 1
        self._last_line = 0.0
        self._shown: int | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._display: threading.Thread | None = None
        if messages and spec.index == 0:  # the set's total: one printer shows it
            self._display = threading.Thread(target=self._display_loop, daemon=True)
            self._display.start()

    @property
    def count(self) -> int:
        """Valid messages this printer received."""
        return self._count

    def received(self, sent_ns: int | None = None) -> None:
        """Record one valid message; ``sent_ns`` (``time.monotonic_ns()`` at send) gives latency."""
        self._count += 1
        v = self._v
        v[self._received_slot] = self._count
        if sent_ns is not None and not self._count & self._lat_mask:
            v[self._hist + bisect_right(board.FLOORS_NS, time.monotonic_ns() - sent_ns)] += 1

    def received_many(self, n: int, sent_ns: Sequence[int] = ()) -> None:
        """Record ``n`` valid messages at once, with the send times of an unbiased
        sample of them (about one in ``lat_every``: the caller chooses which, e.g. the
        messages its counters stamped)."""
        self._count += n
        v = self._v
        v[self._received_slot] = self._count
        if sent_ns:
            now, hist, floors = time.monotonic_ns(), self._hist, board.FLOORS_NS
            for t in sent_ns:
                v[hist + bisect_right(floors, now - t)] += 1

    def corrupt(self, n: int = 1) -> None:
        """Record ``n`` messages that arrived garbled."""
        self._v[self._corrupt_slot] += n

    def show(self, value: int) -> None:
        """Print ``Time: value`` now, unless a line went out less than 0.1 s ago."""
        now = time.monotonic()
        if now - self._last_line < pacing.FLAT_OUT_DISPLAY * 0.9:
            return
        self._last_line = now
        self._print(value)

    def _print(self, value: int) -> None:
        with self._lock:
            self._shown = value
            self._v[self._shown_slot] = value
            with contextlib.suppress(OSError):  # labd stopped reading; the tally still counts
                os.write(1, f"Time: {value}\n".encode())

    def note(self, text: str) -> None:
        """A line of the printer's own in the set's output (e.g. a corrupt message's
        anatomy, for labctl explain); the caller keeps it rare."""
        with self._lock, contextlib.suppress(OSError):
            os.write(1, (text + "\n").encode())

    def _set_total(self) -> int:
        return sum(self._v[board.printer_slot(self.counters, j)] for j in range(self.printers))

    def _display_loop(self) -> None:
        period = pacing.display_period(self.interval)
        phase = (0.5 if self.interval > 0 else 0.0) + self.spec.phase
        while True:
            due = pacing.next_tick(period, phase=phase)
            if self._done.wait(max(0.0, due - time.monotonic())):
                return
            total = self._set_total()
            if total != self._shown:
                self._print(total)

    def finish(self) -> None:
        """Called by the framework when the printer loop returns: the last line."""
        if self._display is None:
            return
        self._done.set()
        self._display.join()
        if self.index == 0:
            total = self._set_total()
            if total != self._shown:
                self._print(total)
