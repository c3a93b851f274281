"""Absolute ticks on the system-wide monotonic clock, shared by every process of a set.

Each set ticks at its own phase within the interval (:func:`set_phase`): every process
of one set wakes at the same instant, as the lesson's race needs, but the sets of a
busy host do not all wake at once (a thousand paced workers woken on the same instant
kept labd from answering for ~100 ms each second on 2 cores).
"""

from __future__ import annotations

import math
import time

FLAT_OUT_DISPLAY = 0.1  # printers show at most 10 lines a second
GOLDEN = (5**0.5 - 1) / 2  # successive sets' phases spread evenly whatever their number


def set_phase(set_id: int) -> float:
    """The fraction of its interval by which set ``set_id``'s ticks are shifted: 0 for
    set 1, then spread over [0, 1) (sets 1, 2, 3, ... at 0, 0.62, 0.24, 0.85, 0.47, ...)."""
    return ((set_id - 1) * GOLDEN) % 1.0


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
