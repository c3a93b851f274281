"""Paired runs: their order, and their ratios judged against a target without assuming
their distribution.

A benchmark that runs a baseline and the product one right after the other gets one
ratio per pair. On a shared or virtual host those ratios spread far wider than a 5 %
target (on the 2-core VM of bench/README.md a bare Python loop alone spreads 0.84-1.18
over 1 s windows), so a single pair, or the ratio of two medians, says little. What a
set of pairs can say is where their *median* lies: the sign test gives an interval that
covers it with a known probability whatever the distribution, and a verdict follows
only when that interval lies wholly on one side of a bound.

Standard library only: the benchmarks that import this are re-imported by every
forkserver child.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Hashable, Sequence
from typing import TypeVar

C = TypeVar("C", bound=Hashable)

LEVEL = 0.95  # an interval's least coverage, where the pairs allow it
WITHIN, OUTSIDE, MET, BELOW = "within", "OUTSIDE", "met", "BELOW"
UNDECIDED = "undecided (noise)"


def add_options(ap: argparse.ArgumentParser) -> None:
    """``--seed`` (of the pairs' order) and ``--from`` (judge saved runs' pairs pooled)."""
    ap.add_argument(
        "--seed",
        type=int,
        default=random.randrange(1 << 32),
        help="seed of the shuffled order (random unless given; recorded)",
    )
    ap.add_argument(
        "--from",
        dest="sources",
        action="append",
        default=[],
        metavar="FILE",
        help="measure nothing: judge the pairs of earlier --json runs, pooled (repeatable)",
    )


def schedule(
    cases: Sequence[C], repeat: int, rng: random.Random, sides: tuple[str, str]
) -> list[tuple[C, str]]:
    """(case, which side goes first) per pair: round r runs every case's r-th pair,
    cases shuffled per round; per case, half its pairs start with one side, half with
    the other, in a shuffled order (so what runs just before a measurement, and a drift
    of the machine, hit both sides and every case alike)."""
    firsts: dict[C, list[str]] = {}
    for case in cases:
        order = [*sides] * (repeat // 2) + [rng.choice(sides)] * (repeat % 2)
        rng.shuffle(order)
        firsts[case] = order
    return [
        (case, firsts[case][r])
        for r in range(repeat)
        for case in rng.sample(list(cases), len(cases))
    ]


def _below(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) <= k - 1): the chance that fewer than k of n values fall
    below the median."""
    return sum(math.comb(n, i) for i in range(k)) / 2.0**n


def median_ci(xs: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """The sign test's two-sided interval for the median: (low, high, its coverage).

    ``[x_(k), x_(n-k+1)]`` of the sorted values covers the median with probability
    ``1 - 2 P(Binomial(n, 1/2) <= k - 1)``; the narrowest with at least ``level``, or
    min-max (and its lower coverage) for fewer than 6 values.
    """
    s, n = sorted(xs), len(xs)
    k = 1
    while k + 1 <= (n + 1) // 2 and 1.0 - 2.0 * _below(n, k + 1) >= level:
        k += 1
    return s[k - 1], s[n - k], 1.0 - 2.0 * _below(n, k)


def median_lower_bound(xs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The sign test's one-sided lower bound for the median: (bound, its coverage).

    The median lies above ``x_(k)`` unless fewer than k values fall below it, which
    has probability ``P(Binomial(n, 1/2) <= k - 1)``; the highest such bound with at
    least ``level``, or the minimum (and its lower coverage) for fewer than 5 values.
    """
    s, n = sorted(xs), len(xs)
    k = 1
    while k + 1 <= n and 1.0 - _below(n, k + 1) >= level:
        k += 1
    return s[k - 1], 1.0 - _below(n, k)


def median_upper_bound(xs: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """The one-sided upper bound, as :func:`median_lower_bound` from above."""
    bound, cover = median_lower_bound([-x for x in xs], level)
    return -bound, cover


def within_verdict(low: float, high: float, target: tuple[float, float]) -> str:
    """A two-sided target: the interval inside it, wholly outside it, or neither."""
    if low >= target[0] and high <= target[1]:
        return WITHIN
    if high < target[0] or low > target[1]:
        return OUTSIDE
    return UNDECIDED


def at_least_verdict(xs: Sequence[float], floor: float, level: float = LEVEL) -> str:
    """A one-sided target (the median at least ``floor``): MET when the lower bound is
    at or above it, BELOW when the upper bound is under it, else undecided."""
    low, cover = median_lower_bound(xs, level)
    if cover < level:  # too few pairs for any bound at this level
        return UNDECIDED
    if low >= floor:
        return MET
    if median_upper_bound(xs, level)[0] < floor:
        return BELOW
    return UNDECIDED


def pairs_needed(
    ratios: Sequence[float], have: int, low: float, high: float | None = None
) -> int | None:
    """About how many pairs would make the verdict at the spread these pairs show:
    against ``[low, high]`` (two-sided, 95 %) or, with ``high`` None, against ``low``
    alone (one-sided). Normal approximation of the sign test's bound on log ratios:
    half-width ``z * sqrt(pi/2) * sigma / sqrt(n)``. None: never, as the median lies on
    a bound. At least 6 and more than ``have`` (which did not decide)."""
    logs = [math.log(r) for r in ratios if r > 0]
    if len(logs) < 2:
        return None
    m = statistics.median(logs)
    sigma = 1.4826 * statistics.median(abs(x - m) for x in logs) or statistics.stdev(logs)
    a = math.log(low)
    if high is None:
        z, margin = 1.645, abs(m - a)
    else:
        b = math.log(high)
        z = 1.96
        margin = min(m - a, b - m) if a <= m <= b else min(abs(m - a), abs(m - b))
    if margin <= 0:
        return None
    return max(6, have + 1, math.ceil((z * math.sqrt(math.pi / 2) * sigma / margin) ** 2))
