"""Absolute ticks on the system-wide monotonic clock, shared by every process of a set."""

from __future__ import annotations

import math
import time

FLAT_OUT_DISPLAY = 0.1  # printers show at most 10 lines a second


def next_index(interval: float, now: float | None = None, phase: float = 0.0) -> int:
    """The number of the next tick after now: tick ``k`` is at ``(k + phase) * interval``."""
    t = time.monotonic() if now is None else now
    return math.floor((t / interval) - phase) + 1


def next_tick(interval: float, now: float | None = None, phase: float = 0.0) -> float:
    """The next multiple of ``interval`` (shifted by ``phase`` of an interval) after now."""
    return (next_index(interval, now, phase) + phase) * interval


def display_period(interval: float) -> float:
    """How often a printer shows a line: each tick, but never above 10 lines a second."""
    return max(interval, FLAT_OUT_DISPLAY)
