"""The experiments' core in-process: a real Lab (real processes, the fake mechanism),
no socket. Quick windows; what is checked is the plumbing, not speed."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import wait_for
from labkit import MakeLab

from labd.errors import LabError, LimitError, NoSuchExperiment, NotAllowed, SetError
from labd.lab import Lab, Limits
from labd.owners import Caller

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
