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
MAX_DEPTH = 16384
MIN_DEPTH = 64

Record = tuple[int, int, int]  # (t_read_ns, value_read, t_write_ns)


def depth_for(counters: int) -> int:
    """Records kept per counter: 16,384 for up to 4 counters, fewer beyond, at least 64."""
    return max(MIN_DEPTH, min(MAX_DEPTH, MAX_RECORDS // max(1, counters)))


def size(counters: int, depth: int) -> int:
    return counters * (1 + depth * FIELDS)


class TraceWriter:
    """One counter's side of the ring. A hot loop may write the slots itself (as
    :meth:`labd.worker.contexts.CounterContext.increment` does flat out): the record at
    ``at``, then ``n + 1`` at ``head``, then ``at`` moves on, from ``end`` back to
    ``first``; it hands ``at`` and ``n`` back when it is done."""

    def __init__(self, view: Any, index: int, depth: int) -> None:
        self.view = view
        self.head = index * (1 + depth * FIELDS)
        self.first = self.head + 1
        self.end = self.first + depth * FIELDS
        self.at = self.first
        self.n = 0

    def record(self, t_read: int, value: int, t_write: int) -> None:
        v, at = self.view, self.at
        v[at] = t_read
        v[at + 1] = value
        v[at + 2] = t_write
        self.n += 1
        v[self.head] = self.n
        at += FIELDS
        self.at = self.first if at == self.end else at


def written(view: Any, counters: int, depth: int) -> list[int]:
    """How many increments each counter recorded in all (its ring keeps the last ones)."""
    return [int(view[i * (1 + depth * FIELDS)]) for i in range(counters)]


def read(view: Any, counters: int, depth: int) -> list[list[Record]]:
    """Each counter's records still in its ring, oldest first.

    The whole array is copied at once (a memcpy: the counters go on meanwhile, flat out
    by hundreds of thousands of increments a second); a counter that wrote during the
    copy may have overwritten its oldest records in it (and torn the next), so only
    those it cannot have touched are kept.
    """
    snap = memoryview(bytes(view)).cast("q")
    after = written(view, counters, depth)
    out: list[list[Record]] = []
    for i in range(counters):
        base = i * (1 + depth * FIELDS)
        n = int(snap[base])
        oldest = max(n - depth, after[i] - depth + 1, 0)
        records = []
        for k in range(oldest, n):
            at = base + 1 + (k % depth) * FIELDS
            t0, value, t1 = snap[at], snap[at + 1], snap[at + 2]
            if 0 < t0 <= t1:
                records.append((int(t0), int(value), int(t1)))
        out.append(records)
    return out
