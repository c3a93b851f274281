"""What a message printer's latency sampling costs: one read's stamps recorded into the
histogram, with the bucket found by the formula (``board.bucket_by_formula``, a log2
per stamp, as before round 0.4.5) against the lookup labd uses (``bisect`` over
``board.FLOORS_NS``).

A flat-out pipe printer records the stamps of one 64 KiB read at a time (86 of them for
16-byte payloads, one message in 16 stamped), as ``PrinterContext.received_many`` does:
``v[hist + bucket(now - t)] += 1`` per stamp. Latencies are drawn log-uniform between
1 us and 10 ms (a flat-out pipe's run). The two are alternated each round; CPU time
per stamp, median of the rounds, and the median of the rounds' ratios (lookup / formula)
with the sign test's interval.

    python bench/latency_bucket.py [--rounds N] [--stamps N]
"""

from __future__ import annotations

import argparse
import array
import random
import statistics
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence

from pairstats import median_ci

from labd.worker import board

Record = Callable[[memoryview, Sequence[int]], None]


def by_formula(v: memoryview, sent_ns: Sequence[int]) -> None:
    now, hist, bucket = time.monotonic_ns(), 4, board.bucket_by_formula
    for t in sent_ns:
        v[hist + bucket(now - t)] += 1


def by_lookup(v: memoryview, sent_ns: Sequence[int]) -> None:
    now, hist, floors = time.monotonic_ns(), 4, board.FLOORS_NS
    for t in sent_ns:
        v[hist + bisect_right(floors, now - t)] += 1


def per_stamp_us(record: Record, stamps: Sequence[int], reads: int) -> float:
    v = memoryview(array.array("q", [0] * (4 + board.BUCKETS)))
    t0 = time.process_time()
    for _ in range(reads):
        record(v, stamps)
    return (time.process_time() - t0) / (reads * len(stamps)) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--stamps", type=int, default=86, help="stamps per read (86)")
    ap.add_argument("--reads", type=int, default=2000, help="reads per round and side")
    args = ap.parse_args()
    rng = random.Random(5)
    now = time.monotonic_ns()
    stamps = [now - int(10 ** rng.uniform(3, 7)) for _ in range(args.stamps)]
    formula: list[float] = []
    lookup: list[float] = []
    for i in range(args.rounds):
        sides = [(formula, by_formula), (lookup, by_lookup)]
        for out, record in sides if i % 2 else reversed(sides):
            out.append(per_stamp_us(record, stamps, args.reads))
    ratios = [a / b for a, b in zip(lookup, formula, strict=True)]
    low, high, _ = median_ci(ratios)
    ratio = statistics.median(ratios)
    print(f"formula {statistics.median(formula):.3f} us a stamp (min {min(formula):.3f})")
    print(f"lookup  {statistics.median(lookup):.3f} us a stamp (min {min(lookup):.3f})")
    print(f"lookup / formula {ratio:.3f} ({low:.3f}-{high:.3f}), {args.rounds} rounds")


if __name__ == "__main__":
    main()
