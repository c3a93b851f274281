"""A counter's trace (``trace=yes``): a bounded ring of its last increments, in shared
memory labd reads (standard library only: it runs in the workers).

Each record is what one increment did: when it started to read (``time.monotonic_ns``
just before the read), the value it read, and when its write was done (just after the
write); the value written is the value read + 1. The timestamps are taken outside the
read-modify-write window and the record is stored after the write, so tracing never
widens the window it observes. Layout, per counter ``i`` (``D`` records deep)::

    [records written so far, then D x (t_read_ns, value_read, t_write_ns)]

Aligned 8-byte stores are atomic; while labd copies a ring the counter goes on, so the
reader keeps only the records the counter cannot have overwritten during the copy.
"""

from __future__ import annotations

from typing import Any

FIELDS = 3
MAX_RECORDS = 1 << 16  # for the whole set: the depth shrinks as counters grow
MAX_DEPTH = 4096
MIN_DEPTH = 64

Record = tuple[int, int, int]  # (t_read_ns, value_read, t_write_ns)


def depth_for(counters: int) -> int:
    """Records kept per counter: 4096 for up to 16 counters, fewer beyond, at least 64."""
    return max(MIN_DEPTH, min(MAX_DEPTH, MAX_RECORDS // max(1, counters)))


def size(counters: int, depth: int) -> int:
    return counters * (1 + depth * FIELDS)


class TraceWriter:
    """One counter's side of the ring."""

    def __init__(self, view: Any, index: int, depth: int) -> None:
        self._v = view
        self._base = index * (1 + depth * FIELDS)
        self._depth = depth
        self._n = 0

    def record(self, t_read: int, value: int, t_write: int) -> None:
        v, n = self._v, self._n
        at = self._base + 1 + (n % self._depth) * FIELDS
        v[at] = t_read
        v[at + 1] = value
        v[at + 2] = t_write
        self._n = n + 1
        v[self._base] = n + 1


def read(view: Any, counters: int, depth: int) -> list[list[Record]]:
    """Each counter's records still in its ring, oldest first (torn ones left out)."""
    out: list[list[Record]] = []
    for i in range(counters):
        base = i * (1 + depth * FIELDS)
        n = int(view[base])
        copied = []
        for k in range(max(0, n - depth), n):
            at = base + 1 + (k % depth) * FIELDS
            copied.append((k, int(view[at]), int(view[at + 1]), int(view[at + 2])))
        # the counter went on meanwhile: the slots it wrote since hold newer records
        # (and the next one may be torn): keep only those it cannot have touched
        oldest = int(view[base]) - depth + 1
        out.append([(t0, v, t1) for k, t0, v, t1 in copied if k >= oldest and 0 < t0 <= t1])
    return out
