"""A set's figures, sampled from its board without stopping its processes.

Reading order brackets the truth: ``done`` (increments finished), then the mechanism's
value, then ``reserved`` (increments started, reported as ``attempted``). So live:

* shared value mechanisms: ``lost = max(0, done - value)`` is a lower bound of the
  updates lost so far (0 for a correct set), and the increments still under way
  (``attempted - value - lost``) are reported as ``in_flight``;
* message mechanisms: messages that arrived garbled are ``corrupt`` (never ``lost``: the
  message arrived, its bytes did not survive), those sent and neither received nor
  corrupt are ``in_flight``, and nothing counts as lost while the set runs.

After a stop nothing is under way: ``in_flight == 0`` and
``lost == attempted - value - corrupt`` (``corrupt`` is 0 but for message mechanisms).

The rate is computed from the tallies and the times they were read: each change of
``attempted`` is a point (the middle of the two reads that saw it change; changes
within a quarter tick are one tick whose counters woke a little apart), and the rate is
the increments between the oldest point in the window and the newest, over the time
between them. A sampler that runs late moves a point by its delay, not by a tick.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from labd.protocol import FIGURE_KEYS, FiguresRecord
from labd.worker import board

T = TypeVar("T")
RATE_WINDOW_MIN = 1.0
RATE_WINDOW_MAX = 10.0
RATE_TICKS = 4  # a paced set's rate spans this many ticks (within the bounds above)
TICK_MERGE = 0.25  # changes closer than this share of a tick are the same tick


@dataclass
class Figures:
    value: int = 0
    attempted: int = 0
    lost: int = 0
    in_flight: int = 0
    corrupt: int = 0
    rate: float = 0.0
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    #: time.time() when these figures were read (not one of FIGURE_KEYS: not stored)
    sampled_at: float | None = None

    def as_record(self) -> FiguresRecord:
        return {
            "value": self.value,
            "attempted": self.attempted,
            "lost": self.lost,
            "in_flight": self.in_flight,
            "corrupt": self.corrupt,
            "rate": self.rate,
            "latency_p50_us": self.latency_p50_us,
            "latency_p99_us": self.latency_p99_us,
        }

    def row(self, set_id: int, at: float) -> tuple[object, ...]:
        """A sample row: (set_id, at, then the figures in FIGURE_KEYS order)."""
        return (set_id, at, *(getattr(self, key) for key in FIGURE_KEYS))


class SetMetrics:
    """Turns board reads into :class:`Figures`; the sampler calls it, the API reads it."""

    def __init__(
        self,
        reader: board.BoardReader,
        observe: Callable[[], int | None],
        *,
        messages: bool,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._observe = observe
        self._messages = messages
        self._clock = clock
        self._interval = interval
        self._window = min(RATE_WINDOW_MAX, max(RATE_WINDOW_MIN, RATE_TICKS * interval))
        self._lat_window = min(RATE_WINDOW_MAX, max(RATE_WINDOW_MIN, 5.0 * interval))
        self._points: deque[tuple[float, int]] = deque()  # (time of a change, attempted)
        self._seen: tuple[float, int] | None = None  # the last read: (time, attempted)
        self._per_counter: list[int] = []
        self._hists: deque[tuple[float, list[int]]] = deque()
        self._last_value = 0
        self._lock = threading.Lock()
        self._final = False
        self._final_per_counter: list[int] = []
        self.figures = Figures()

    def _value(self) -> int:
        if self._messages:
            return self._reader.received()
        try:
            value = self._observe()
        except Exception:  # e.g. the Manager server died: the last value seen stands
            value = None
        if value is None:
            return self._last_value
        self._last_value = int(value)
        return self._last_value

    def sample(self) -> Figures:
        """A live sample (cheap: board reads and one observation)."""
        with self._lock:
            if self._final:
                return self.figures
            return self._sample()

    def _sample(self) -> Figures:
        r = self._reader
        done = r.done()
        value = self._value()
        per_counter = r.per_counter()  # the counters' reserved slots: attempted
        attempted = sum(per_counter)
        corrupt = r.corrupt()
        lost = 0 if self._messages else max(0, done - value)
        in_flight = max(0, attempted - value - lost - corrupt)
        f = Figures(value, attempted, lost, in_flight, corrupt)
        f.rate = self._rate(attempted)
        f.latency_p50_us = self.figures.latency_p50_us
        f.latency_p99_us = self.figures.latency_p99_us
        f.sampled_at = time.time()
        self.figures = f
        self._per_counter = per_counter
        return f

    def _rate(self, attempted: int) -> float:
        """Increments a second, from the points where ``attempted`` was seen to change."""
        now = self._clock()
        before, self._seen = self._seen, (now, attempted)
        points = self._points
        if before is not None and attempted != before[1]:
            at = (before[0] + now) / 2  # it changed between the two reads
            if points and at - points[-1][0] < TICK_MERGE * self._interval:
                at = points[-1][0]  # the same tick, its counters a little apart
                points.pop()
            _slide(points, (at, attempted), self._window)
        if len(points) < 2:
            return 0.0
        (t0, a0), (t1, a1) = points[0], points[-1]
        gap = max(1.5 * self._interval, 0.5)  # no change for longer: the set slowed
        end = now if now - t1 > gap else t1
        return round((a1 - a0) / (end - t0), 1) if end > t0 else 0.0

    def sample_latency(self) -> None:
        """Once a second: latency percentiles over the recent window (message mechanisms)."""
        with self._lock:
            self._sample_latency()

    def _sample_latency(self) -> None:
        if not self._messages or self._final:
            return
        now = self._clock()
        hist = self._reader.histogram()
        _, old = _slide(self._hists, (now, hist), self._lat_window)
        recent = [a - b for a, b in zip(hist, old, strict=True)]
        if not any(recent):
            recent = hist
        self.figures.latency_p50_us = board.percentile_us(recent, 0.50)
        self.figures.latency_p99_us = board.percentile_us(recent, 0.99)

    def consistent(self) -> tuple[Figures, list[int]]:
        """The last figures and each counter's attempts, of the same read."""
        with self._lock:
            if self._final:
                return self.figures, list(self._final_per_counter)
            return self.figures, list(self._per_counter)

    def final(self) -> Figures:
        """Figures once every process has exited: exact accounting."""
        with self._lock:
            self._final = True
            return self._take_final()

    def _take_final(self) -> Figures:
        r = self._reader
        value = self._value()
        self._final_per_counter = r.per_counter()
        attempted = sum(self._final_per_counter)
        corrupt = r.corrupt()
        lost = max(0, attempted - value - corrupt) if self._messages else attempted - value
        f = Figures(value, attempted, lost, 0, corrupt)
        f.sampled_at = time.time()
        f.rate = self.figures.rate
        if self._messages:
            hist = r.histogram()
            f.latency_p50_us = board.percentile_us(hist, 0.50)
            f.latency_p99_us = board.percentile_us(hist, 0.99)
        self.figures = f
        return f

    def release(self) -> None:
        """Let go of the shared board; the figures stay readable."""
        with self._lock:
            if not self._final:
                self._final_per_counter = self._reader.per_counter()
                self._final = True
            self._reader.release()

    def tallies(self) -> dict[str, Any]:
        """The board's exact tallies now, with the monotonic instant they were read at
        (an experiment's window ends): not the sampler's cached figures."""
        with self._lock:
            if self._final:
                raise ValueError("the set has ended")
            r = self._reader
            t0 = time.monotonic()
            per_counter = r.per_counter()
            t1 = time.monotonic()
            return {
                "at": (t0 + t1) / 2,
                "attempted": sum(per_counter),
                "counting": sum(1 for n in per_counter if n),  # counters that have begun
                "received": r.received(),
                "corrupt": r.corrupt(),
                "histogram": r.histogram() if self._messages else [],
            }

    def progress(self) -> int:
        """A number that grows while the set does anything (increments or receipts)."""
        with self._lock:
            if self._final:
                return 0
            return self._reader.done() + self._reader.received()

    def per_counter(self) -> list[int]:
        """Each counter's increments; kept at :meth:`final`, as the board is released."""
        with self._lock:
            if self._final:
                return list(self._final_per_counter)
            return self._reader.per_counter()


def _slide(
    points: deque[tuple[float, T]], point: tuple[float, T], window: float
) -> tuple[float, T]:
    """Add ``point`` (time, reading) and drop those older than ``window`` seconds, but
    keep the newest one that is: the oldest left is the window's start, returned."""
    points.append(point)
    now = point[0]
    while len(points) > 2 and now - points[1][0] >= window:
        points.popleft()
    return points[0]
