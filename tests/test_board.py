"""The latency histogram's fast bucket lookup gives exactly the formula's bucket."""

from __future__ import annotations

import random

from labd.worker import board


def test_bucket_lookup_matches_the_formula_at_every_edge() -> None:
    assert len(board.FLOORS_NS) == board.BUCKETS - 1
    assert sorted(set(board.FLOORS_NS)) == board.FLOORS_NS
    for floor in board.FLOORS_NS:
        for ns in range(floor - 300, floor + 301):
            assert board.bucket(ns) == board.bucket_by_formula(ns), ns


def test_bucket_lookup_matches_the_formula_everywhere_else() -> None:
    rng = random.Random(9)
    samples = [0, -1, -(10**9), 1, 10**18] + [int(10 ** rng.uniform(0, 16)) for _ in range(100_000)]
    for ns in samples:
        assert board.bucket(ns) == board.bucket_by_formula(ns), ns
    assert board.bucket(10**18) == board.BUCKETS - 1
