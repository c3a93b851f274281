"""labd.metrics over a real board (a RawArray, written as counters and printers do), with
the clock as a seam: the rate under a late sampler, the accounting of corrupt messages."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from labd.metrics import SetMetrics
from labd.worker import board


class Board:
    """A set's real board; ``tick`` does what ``n`` paced counters do at a tick."""

    def __init__(self, counters: int, printers: int = 1) -> None:
        self.counters, self.printers = counters, printers
        self.array: Any = multiprocessing.RawArray("q", board.size(counters, printers))
        self.v = board.view(self.array)

    def reader(self) -> board.BoardReader:
        return board.BoardReader(self.array, self.counters, self.printers)

    def tick(self) -> None:
        for i in range(self.counters):
            self.v[board.counter_slot(i)] += 1
            self.v[board.counter_slot(i) + 1] += 1

    def receive(self, n: int, corrupt: int = 0) -> None:
        self.v[board.printer_slot(self.counters, 0)] += n
        self.v[board.printer_slot(self.counters, 0) + 1] += corrupt


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def paced_rate(reads: list[float], counters: int = 10, until: float = 6.0) -> float:
    """10 counters ticking once a second (at 1, 2, 3 ...), sampled at ``reads``."""
    b, clock, value = Board(counters), Clock(), [0]
    m = SetMetrics(b.reader(), lambda: value[0], messages=False, interval=1.0, clock=clock)
    ticks = 0
    for at in reads:
        while ticks + 1 <= at and ticks + 1 <= until:
            ticks += 1
            b.tick()
            value[0] += counters
        clock.now = at
        m.sample()
    return m.figures.rate


def regular(start: float, end: float, every: float = 0.1) -> list[float]:
    return [round(start + k * every, 3) for k in range(int((end - start) / every) + 1)]


def test_the_rate_of_a_paced_set_is_its_ticks() -> None:
    assert paced_rate(regular(0.05, 5.05)) == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("late", [0.3, 0.45])
def test_a_late_sampler_does_not_count_a_tick_too_many(late: float) -> None:
    """Under load (load average 16-19) the sampler ran late and the 2-tick window caught
    three ticks: 'shared 10' read 14.9/s. A read late by ``late`` s just after a tick
    moves a point by half of that, not by a whole tick."""
    reads = [*regular(0.05, 0.95), *regular(0.95 + late, 3.05)]
    assert paced_rate(reads) == pytest.approx(10.0, rel=0.1)
    reads = [*regular(0.05, 2.95), *regular(2.95 + late, 5.05)]
    assert paced_rate(reads) == pytest.approx(10.0, rel=0.1)


def test_counters_that_wake_a_little_apart_make_one_tick() -> None:
    b, clock, value = Board(10), Clock(), [0]
    m = SetMetrics(b.reader(), lambda: value[0], messages=False, interval=1.0, clock=clock)
    for at in regular(0.05, 4.95):
        if at % 1 < 0.1 and at > 1:  # a read lands between the counters of a tick
            for i in range(3):
                b.v[board.counter_slot(i)] += 1
            clock.now = at - 0.04
            m.sample()
            for i in range(3, 10):
                b.v[board.counter_slot(i)] += 1
            for i in range(3):
                b.v[board.counter_slot(i)] -= 1
            b.tick()
            for i in range(3, 10):
                b.v[board.counter_slot(i)] -= 1
        clock.now = at
        m.sample()
    assert m.figures.rate == pytest.approx(10.0, rel=0.1)


def test_a_stalled_set_rate_falls() -> None:
    assert paced_rate(regular(0.05, 12.05), until=4.0) < 3.0


def test_every_sample_says_when_it_was_read() -> None:
    b = Board(2)
    m = SetMetrics(b.reader(), lambda: 0, messages=False, interval=1.0)
    before = time.time()
    sampled = m.sample().sampled_at
    assert sampled is not None and before <= sampled <= time.time()


def test_corrupt_messages_are_not_lost() -> None:
    """The pipe lesson's point is corruption: a garbled message arrived, it is corrupt."""
    b = Board(2)
    m = SetMetrics(b.reader(), lambda: None, messages=True, interval=0.0)
    for _ in range(50):
        b.tick()
    b.receive(40, corrupt=6)
    live = m.sample()
    assert (live.lost, live.corrupt, live.in_flight) == (0, 6, 100 - 46)
    b.receive(54 - 6)
    final = m.final()
    assert (final.value, final.attempted, final.corrupt, final.lost) == (88, 100, 6, 6)
    assert final.in_flight == 0


def test_per_counter_is_of_the_same_read_as_attempted() -> None:
    b = Board(3)
    m = SetMetrics(b.reader(), lambda: 0, messages=False, interval=0.0)
    b.tick()
    m.sample()
    b.tick()  # the counters go on after the sample
    figures, per_counter = m.consistent()
    assert sum(per_counter) == figures.attempted == 3
