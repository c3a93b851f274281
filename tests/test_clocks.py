"""Clocks: order and durations come from the monotonic clock, wall times are for display.

The wall clock is the Lab's constructor seam (STYLE rule 11): a clock that steps back an
hour while a set runs, as an NTP correction or an operator's ``date -s`` would.
Real child processes, a real history store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from fakes import FakeCounter
from helpers import short_dir, wait_for

from labctl import render
from labd.lab import Lab
from labd.registry import Registry
from labd.testing import running

STEP = -3600.0


class SteppingClock:
    """The wall clock, plus an offset the test can step."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> SteppingClock:
    return SteppingClock()


@pytest.fixture
def lab(tmp_path: Path, clock: SteppingClock) -> Iterator[Lab]:
    lab = Lab(
        tmp_path / "state",
        registry=Registry.of(FakeCounter),
        runtime_dir=short_dir(),
        clock=clock,
    )
    lab.start()
    manager = lab.manager.pid
    try:
        yield lab
    finally:
        pids = [p["pid"] for s in lab.status() for p in lab.inspect(s["id"])["processes"]]
        procs = [psutil.Process(p) for p in [*pids, manager] if p and psutil.pid_exists(p)]
        lab.close()
        wait_for(lambda: not running(procs), 10, "the Lab's processes to end")


@pytest.mark.daemon
def test_a_backward_wall_clock_step_keeps_events_in_order_and_durations_right(
    lab: Lab, clock: SteppingClock
) -> None:
    before_spawn = time.monotonic()
    set_id = lab.spawn("fake", 1, {"interval": 0.02})["id"]
    after_spawn = time.monotonic()  # it runs from some time in between
    wait_for(lambda: lab.status([set_id])[0]["attempted"] >= 5, 10, "the set to count")
    clock.offset = STEP  # the wall clock jumps an hour back while the set runs
    wait_for(lambda: lab.status([set_id])[0]["attempted"] >= 30, 10, "more counting")
    before_stop = time.monotonic()
    lab.stop([set_id])
    after_stop = time.monotonic()

    found = lab.inspect(set_id)
    states = [e["state"] for e in found["events"]]
    assert states == ["starting", "running", "stopping", "stopped"], found["events"]
    assert found["stopped_at"] < found["started_at"], "the wall times show the step"
    duration = found["duration"]
    least, most = before_stop - after_spawn, after_stop - before_spawn
    assert least <= duration <= most, (least, duration, most)
    shown = render.inspect(found)
    ran_for = next(line for line in shown.splitlines() if "ran for" in line)
    assert "-" not in ran_for and "0.0s" not in ran_for, ran_for
