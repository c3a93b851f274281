"""The experiments' core in-process: a real Lab (real processes, the fake mechanism),
no socket. Quick windows; what is checked is the plumbing, not speed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from helpers import wait_for
from labkit import MakeLab

from labd.errors import LabError, LimitError, NoSuchExperiment, NotAllowed, SetError
from labd.experiments.stats import latency
from labd.lab import Lab, Limits
from labd.mechanisms.pipe import PipeMessages
from labd.mechanisms.queue import QueueMessages
from labd.owners import Caller
from labd.registry import Registry

pytestmark = [pytest.mark.daemon, pytest.mark.timeout(120)]  # a busy host: slow stops
QUICK = {"seconds": 0.3, "warmup": 0.1, "repeat": 1}


def finished(lab: Lab, exp_id: int) -> dict[str, Any]:
    def over() -> dict[str, Any] | None:
        e = lab.experiments.get(exp_id)
        return None if e["state"] in ("queued", "running") else e

    return wait_for(over, 90, f"experiment {exp_id} to end")


def test_runs_are_real_named_sets_and_the_window_is_measured(make_lab: MakeLab) -> None:
    lab = make_lab()
    e = lab.experiments.compare({"cases": ["fake", "fake:level=2"], **QUICK})
    assert e["state"] in ("queued", "running") and e["progress"]["runs"] == 2
    e = finished(lab, e["id"])
    assert e["state"] == "done", e["error"]
    names = [lab.inspect(r["set_id"])["name"] for r in e["runs"]]
    assert all(n.startswith(f"exp {e['id']}: fake") and " rep " in n for n in names)
    for r in e["runs"]:
        assert r["state"] == "done" and r["rate"] > 0 and r["window_s"] >= 0.3
        assert r["lost"] == 0  # the fake is exact
    assert [c["case"] for c in e["cases"]] == ["fake", "fake:level=2"]
    assert e["cases"][1]["params"]["level"] == 2
    assert lab.experiments.listing(5)[0]["id"] == e["id"]


def test_cancel_a_queued_and_a_running_experiment(make_lab: MakeLab) -> None:
    lab = make_lab()
    first = lab.experiments.compare({"cases": ["fake"], "seconds": 30, "repeat": 1})
    second = lab.experiments.compare({"cases": ["fake"], **QUICK})
    assert lab.experiments.cancel(second["id"])["state"] == "cancelled"
    wait_for(lambda: lab.experiments.get(first["id"])["progress"]["run"], 20, "the run")
    lab.experiments.cancel(first["id"])
    e = finished(lab, first["id"])
    assert e["state"] == "cancelled" and e["runs"][0]["state"] == "cancelled"
    assert all(s["state"] == "stopped" for s in lab.status())
    with pytest.raises(LabError, match="already cancelled"):
        lab.experiments.cancel(first["id"])


def test_tallies_of_a_set_that_is_not_running(make_lab: MakeLab) -> None:
    lab = make_lab()
    set_id = int(lab.spawn("fake", 1, {"interval": 0})["id"])
    t = lab.tallies(set_id)
    assert t["attempted"] >= 0 and t["at"] > 0 and t["histogram"] == []
    lab.stop([set_id])
    with pytest.raises(SetError, match="not running"):
        lab.tallies(set_id)
    with pytest.raises(NoSuchExperiment, match="no experiment 42"):
        lab.experiments.get(42)


def test_an_experiments_sets_belong_to_its_caller_who_alone_may_cancel_it(
    make_lab: MakeLab,
) -> None:
    alice, bob = Caller("alice", uid=60001), Caller("bob", uid=60002)
    admin = Caller("root", admin=True, uid=0)
    lab = make_lab(limits=Limits(per_user=8))
    running = lab.experiments.compare({"cases": ["fake"], "seconds": 30, "repeat": 1}, alice)
    queued = lab.experiments.compare({"cases": ["fake"], **QUICK}, alice)
    set_id = wait_for(
        lambda: (runs := lab.experiments.get(running["id"])["runs"]) and runs[0]["set_id"],
        30,
        "the run's set",
    )
    s = lab.inspect(set_id)
    assert s["owner"] == "alice"

    # the run's processes count in alice's quota, not in bob's
    theirs = s["counters"] + s["printers"]
    with pytest.raises(LimitError, match="alice's sets"):
        lab.spawn("fake", 8 - theirs, {}, alice)
    bobs = lab.spawn("fake", 8 - theirs, {}, bob)
    lab.stop([bobs["id"]], bob)

    # only the owner or an admin may cancel, queued or running
    for e in (queued, running):
        with pytest.raises(NotAllowed, match=f"experiment {e['id']} belongs to alice"):
            lab.experiments.cancel(e["id"], bob)
    assert lab.experiments.get(running["id"])["state"] == "running"
    assert lab.experiments.cancel(queued["id"], admin)["state"] == "cancelled"
    lab.experiments.cancel(running["id"], alice)
    assert finished(lab, running["id"])["state"] == "cancelled"


STALL_S = 0.5
TICK_S = 0.05


def _window(lab: Lab, set_id: int, stall: int, enough: int) -> dict[str, Any]:
    """Stop the set's counter (SIGSTOP) for STALL_S, resume it, and return the tallies
    from just before the stall to once ``enough`` latencies were recorded after it."""
    counter = next(p["pid"] for p in lab.inspect(set_id)["processes"] if p["role"] == "counter")
    start = lab.tallies(set_id)
    os.kill(counter, signal.SIGSTOP)
    try:
        time.sleep(STALL_S)  # the fault's length, not a synchronisation
    finally:
        os.kill(counter, signal.SIGCONT)
    after = lab.tallies(set_id)
    seen = sum(after["histogram"]) + enough

    def caught_up() -> dict[str, Any] | None:
        t = lab.tallies(set_id)
        return t if sum(t["histogram"]) >= seen else None

    end = wait_for(caught_up, 20, "latencies after the stall")
    hist = [b - a for a, b in zip(start["histogram"], end["histogram"], strict=True)]
    ticks = (end["at"] - start["at"]) / TICK_S
    return {"hist": hist, "ticks": ticks, "attempted": end["attempted"] - start["attempted"]}


@pytest.mark.parametrize("mechanism", ["queue", "pipe"])
def test_a_paced_counters_stall_shows_as_latency_not_fewer_messages(
    make_lab: MakeLab, mechanism: str
) -> None:
    """Paced messages are stamped with the tick they were due at, and a counter that
    missed ticks sends them late rather than never (the issue's coordinated omission)."""
    lab = make_lab(registry=Registry.of(QueueMessages, PipeMessages))
    set_id = int(lab.spawn(mechanism, 1, {"interval": TICK_S})["id"])
    wait_for(lambda: sum(lab.tallies(set_id)["histogram"]) >= 3, 20, "the first messages")
    w = _window(lab, set_id, STALL_S, enough=int(STALL_S / TICK_S) + 2)
    figures = latency(w["hist"])
    shown = (STALL_S - 2 * TICK_S) * 1e6  # the first missed tick waited this at least
    assert figures["latency_max_us"] >= shown and figures["latency_p99_us"] >= shown, figures
    assert w["attempted"] >= w["ticks"] - 2, w  # no tick skipped: every one was sent
    lab.stop([set_id])


def test_a_flat_out_counters_stall_is_not_latency(make_lab: MakeLab) -> None:
    """Flat out there is no schedule: a message's time is its real send time, so the
    messages sent after a stall do not carry it. (A pipe: the queue's feeder thread
    holds up to ``maxsize`` messages put before the stall, whose latency has it.)"""
    lab = make_lab(registry=Registry.of(PipeMessages))
    set_id = int(lab.spawn("pipe", 1, {"interval": 0})["id"])
    wait_for(lambda: sum(lab.tallies(set_id)["histogram"]) >= 100, 20, "the first messages")
    w = _window(lab, set_id, STALL_S, enough=2000)
    assert latency(w["hist"])["latency_p99_us"] < STALL_S * 1e6 / 2, latency(w["hist"])
    lab.stop([set_id])
