"""The scoreboard of a set: one shared array of int64 slots, each written by one process.

Layout (``N`` counters, ``M`` printers, ``B`` latency buckets)::

    counter i:  [reserved, done]                 at 2*i
    printer j:  [received, corrupt, shown, 0, bucket 0 .. bucket B-1]
                                                 at 2*N + j*(4+B)

A counter adds a batch to ``reserved`` before doing it and to ``done`` after, so a
reader that reads ``done``, then the mechanism's value, then ``reserved`` brackets the
truth. Aligned 8-byte loads and stores are atomic on every platform labd runs on.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

BUCKETS = 256
_PER_PRINTER = 4 + BUCKETS
_STEPS_PER_OCTAVE = 8


def size(counters: int, printers: int) -> int:
    return 2 * counters + printers * _PER_PRINTER


def counter_slot(index: int) -> int:
    """Offset of a counter's ``reserved`` slot; ``done`` follows it."""
    return 2 * index


def printer_slot(counters: int, index: int) -> int:
    """Offset of a printer's ``received`` slot; corrupt, shown, then buckets follow."""
    return 2 * counters + index * _PER_PRINTER


def bucket_by_formula(latency_ns: int) -> int:
    """Histogram bucket of a latency: 8 buckets per doubling of microseconds (~9 %).

    The definition. :func:`bucket` gives the same index faster."""
    if latency_ns <= 0:
        return 0
    i = int(math.log2(latency_ns / 1000.0 + 1.0) * _STEPS_PER_OCTAVE)
    return i if i < BUCKETS else BUCKETS - 1


def _first_ns(index: int) -> int:
    """The smallest latency (ns) the formula puts in bucket ``index`` or above."""
    ns = math.ceil(1000.0 * (math.pow(2.0, index / _STEPS_PER_OCTAVE) - 1.0))
    while bucket_by_formula(ns) < index:
        ns += 1
    while ns > 0 and bucket_by_formula(ns - 1) >= index:
        ns -= 1
    return ns


#: First latency (ns) of buckets 1 .. BUCKETS-1: ``bisect_right(FLOORS_NS, ns)`` is
#: the bucket of ``ns``. One C call instead of a log per sample, on every message
#: mechanism's hot path; the index is the formula's exactly (stored results keep it).
FLOORS_NS = [_first_ns(i) for i in range(1, BUCKETS)]


def bucket(latency_ns: int) -> int:
    """Histogram bucket of a latency (as :func:`bucket_by_formula`)."""
    return bisect.bisect_right(FLOORS_NS, latency_ns)


def bucket_upper_us(index: int) -> float:
    return float(2.0 ** ((index + 1) / _STEPS_PER_OCTAVE) - 1.0)


def percentile_us(histogram: Sequence[int], q: float) -> float | None:
    """The q-quantile (0..1) of a bucket histogram, as the bucket's upper bound."""
    total = sum(histogram)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(histogram):
        seen += n
        if seen >= rank and n:
            return round(bucket_upper_us(i), 1)
    return round(bucket_upper_us(len(histogram) - 1), 1)


def view(array: Any) -> memoryview:
    """An int64 memoryview over a ``RawArray('q', ...)`` (fast indexed access)."""
    return memoryview(array).cast("B").cast("q")


class BoardReader:
    """The daemon's read side of a set's board."""

    def __init__(self, array: Any, counters: int, printers: int) -> None:
        self._array = array  # keep the shared memory alive
        self._v = view(array)
        self.counters = counters
        self.printers = printers

    def done(self) -> int:
        v = self._v
        return sum(v[2 * i + 1] for i in range(self.counters))

    def reserved(self) -> int:
        v = self._v
        return sum(v[2 * i] for i in range(self.counters))

    def per_counter(self) -> list[int]:
        return [self._v[2 * i] for i in range(self.counters)]

    def received(self) -> int:
        return sum(self._v[printer_slot(self.counters, j)] for j in range(self.printers))

    def corrupt(self) -> int:
        return sum(self._v[printer_slot(self.counters, j) + 1] for j in range(self.printers))

    def histogram(self) -> list[int]:
        out = [0] * BUCKETS
        for j in range(self.printers):
            base = printer_slot(self.counters, j) + 4
            for b, n in enumerate(self._v[base : base + BUCKETS]):
                out[b] += n
        return out

    def release(self) -> None:
        self._v.release()
        self._array = None
