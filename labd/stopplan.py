"""The bounds of a set's stop: each role's grace when asked, the SIGTERM and SIGKILL
waits, and how a deadline (labd's shutdown budget, see labd.protocol.TIMEOUT_STOP_S)
is shared between the steps, so that a stop always ends in time, draining what it can."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class StopTimes:
    """Bounds of an orderly stop, in seconds."""

    counters: float = 3.0
    printers: float = 5.0
    terminate: float = 1.0


@dataclass(frozen=True)
class StopPlan:
    """One stop's bounds: each role's grace, the monotonic instants its draining ends,
    and each SIGTERM/SIGKILL wait. Without a deadline, MAX_DRAIN_S per role applies."""

    counters: float
    printers: float
    terminate: float
    counters_until: float
    printers_until: float

    #: the shares of a deadline's time the counters, then the printers, may drain
    COUNTERS_SHARE = 0.6
    SIGNALS_SHARE = 0.1  # each of the four SIGTERM/SIGKILL waits, at most
    HELD_SHARE = 0.5  # "stop all" waits for sets another call holds, at most

    @classmethod
    def of(cls, times: StopTimes, until: float | None) -> StopPlan:
        if until is None:
            never = float("inf")
            return cls(times.counters, times.printers, times.terminate, never, never)
        left = max(0.0, until - time.monotonic())
        terminate = min(times.terminate, cls.SIGNALS_SHARE * left)
        return cls(
            min(times.counters, left),
            min(times.printers, left),
            terminate,
            until - (1.0 - cls.COUNTERS_SHARE) * left,
            until - 2 * terminate,
        )


class StopClock:
    """One set's stop plan, which a shutdown may shorten while the stop runs: a client's
    stop keeps its own bounds until SIGTERM, then ends within labd's budget like the rest
    (:meth:`hurry`). The waits of a stop (:meth:`wait`) notice within POLL_S."""

    POLL_S = 0.25

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: StopTimes | None = None
        self.until: float | None = None  # the monotonic instant the stop must end by
        self.plan = StopPlan.of(StopTimes(), None)

    def begin(self, times: StopTimes, until: float | None) -> StopPlan:
        """The stop begins, bounded by ``until`` or an earlier hurry."""
        with self._lock:
            self._times = times
            if until is not None and (self.until is None or until < self.until):
                self.until = until
            self.plan = StopPlan.of(times, self.until)
            return self.plan

    def hurry(self, until: float) -> None:
        """End the stop (under way, or still to begin) by ``until`` at the latest."""
        with self._lock:
            if self.until is not None and self.until <= until:
                return
            self.until = until
            if self._times is not None:
                self.plan = StopPlan.of(self._times, until)

    def grace(self, role: str) -> float:
        return self.plan.counters if role == "counter" else self.plan.printers

    def role_until(self, role: str) -> float:
        """The instant a role's draining ends (its SIGTERM and SIGKILL come after)."""
        return self.plan.counters_until if role == "counter" else self.plan.printers_until

    def wait(self, event: threading.Event, deadline: float, role: str) -> bool:
        """Wait for ``event`` until ``deadline`` or the role's draining ends (which a
        hurry may bring forward); whether it is set."""
        while True:
            left = min(deadline, self.role_until(role)) - time.monotonic()
            if left <= 0:
                return event.is_set()
            if event.wait(min(left, self.POLL_S)):
                return True
