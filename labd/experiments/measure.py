"""One run of an experiment: a real set, a warm-up discarded, a measured window.

The warm-up starts once every counter has begun counting (a worker's start is never
measured). The window is measured from the counters' own tallies, read at both ends with the
monotonic instant of the read (:meth:`labd.lab.Lab.tallies`), not from the sampler's
once-a-second figures. CPU time is that of the set's processes over the window (and of
labd's Manager server for ``manager``). Lost and corrupt come from the set's exact final
tallies, once it has stopped.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from labd.errors import LabError
from labd.experiments.spec import Plan, Point
from labd.owners import LABD, Caller

if TYPE_CHECKING:
    from labd.lab import Lab

#: the set stops by itself this long after its window should have ended, should its
#: experiment's runner be gone
SAFETY_S = 120.0
#: how long the counters of a run's set may take to begin counting (a loaded host)
READY_S = 60.0
READY_POLL_S = 0.002


class Cancelled(Exception):
    """The experiment was cancelled (or labd is stopping) during this run."""


@dataclass(frozen=True)
class RunTag:
    experiment: int
    point: int
    repeat: int

    def name(self, point: Point, repeats: int) -> str:
        text = f"exp {self.experiment}: {point.case} n={point.counters}"
        if point.sweep_key:
            text += f" {point.sweep_key}={point.sweep_value}"
        return f"{text} rep {self.repeat + 1}/{repeats}"[:200]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def run_once(
    lab: Lab,
    plan: Plan,
    tag: RunTag,
    cancel: threading.Event,
    on_spawned: Callable[[int], None],
    owner: Caller = LABD,
) -> dict[str, Any]:
    """Run one point once, its set owned by ``owner`` (it counts in their quota); the
    result record. Raises Cancelled or LabError."""
    point = plan.points[tag.point]
    params: dict[str, object] = dict(point.given)
    params.update(
        interval=str(plan.interval),
        duration=str(plan.warmup + plan.seconds + SAFETY_S),
        name=tag.name(point, plan.repeat),
    )
    status: dict[str, Any] = dict(lab.spawn(point.mechanism, point.counters, params, owner))
    set_id = int(status["id"])
    on_spawned(set_id)
    pids = [int(p["pid"]) for p in status["processes"]]
    if point.mechanism == "manager" and lab.manager.pid:
        pids.append(lab.manager.pid)
    try:
        _until_counting(lab, set_id, point.counters, cancel, READY_S + plan.interval)
        if cancel.wait(plan.warmup):
            raise Cancelled()
        start, cpu0 = lab.tallies(set_id), cpu_seconds(pids)
        if cancel.wait(max(0.0, plan.seconds)):
            raise Cancelled()
        end, cpu1 = lab.tallies(set_id), cpu_seconds(pids)
    finally:
        final = _stop(lab, set_id)
    if final is None or final["state"] != "stopped":
        if final is None:
            raise LabError(f"set {set_id} could not be stopped")
        raise LabError(f"set {set_id} ended {final['state']}: {final.get('error') or ''}".strip())
    return _result(status, final, start, end, cpu1 - cpu0)


def _until_counting(
    lab: Lab, set_id: int, counters: int, cancel: threading.Event, timeout: float
) -> None:
    """Wait until every counter of the set has begun counting: the warm-up starts there,
    so a worker's start (slow on a loaded host) is never inside the measured window."""
    deadline = time.monotonic() + timeout
    while lab.tallies(set_id)["counting"] < counters:
        if time.monotonic() > deadline:
            raise LabError(
                f"set {set_id}: its counters did not all begin within {timeout:g} s "
                f"(see: labctl inspect {set_id})"
            )
        if cancel.wait(READY_POLL_S):
            raise Cancelled()


def _stop(lab: Lab, set_id: int) -> dict[str, Any] | None:
    try:
        return dict(lab.stop([set_id])[0])
    except LabError:  # e.g. labd's own stop of every set got there first
        return None


def _result(
    status: dict[str, Any],
    final: dict[str, Any],
    start: dict[str, Any],
    end: dict[str, Any],
    cpu: float,
) -> dict[str, Any]:
    window = end["at"] - start["at"]
    done = end["attempted"] - start["attempted"]
    hist = {
        str(i): b - a
        for i, (a, b) in enumerate(zip(start["histogram"], end["histogram"], strict=True))
        if b - a
    }
    return {
        "set_id": status["id"],
        "params": status["params"],
        "window_s": round(window, 6),
        "attempted": done,
        "rate": round(done / window, 1) if window > 0 else 0.0,
        "attempted_total": final["attempted"],
        "value": final["value"],
        "lost": final["lost"],
        "corrupt": final["corrupt"],
        "cpu_s": round(cpu, 4),
        "cpu_us_per_inc": round(cpu / done * 1e6, 3) if done else None,
        "histogram": hist,
    }
