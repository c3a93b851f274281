"""The bounds of a set's stop: each role's grace when asked, the SIGTERM and SIGKILL
waits, and how a deadline (labd's shutdown budget, see labd.protocol.TIMEOUT_STOP_S)
is shared between the steps, so that a stop always ends in time, draining what it can."""

from __future__ import annotations

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
