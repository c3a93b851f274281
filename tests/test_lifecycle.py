"""A set's lifecycle: the transition table, and the racy paths driven through it.

The racy paths run real processes in an in-process Lab; each ends with the set's
recorded events checked against :data:`labd.lifecycle.TRANSITIONS` and no refused
(illegal) change in the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fakes import FakeCounter
from helpers import sigkill, wait_for
from labkit import MakeLab, close, one, pids, spawn

from labd.errors import SetBusy, SetError
from labd.lab import Lab
from labd.lifecycle import TRANSITIONS, Lifecycle, allowed, check_path
from labd.mechanisms.manager import ManagerValue
from labd.protocol import FINISHED_STATES, LIVE_STATES, STATES, State
from labd.registry import Registry
from labd.store import FILENAME, Store

pytestmark = pytest.mark.daemon


# --- the table ---------------------------------------------------------------------------
def test_every_state_has_a_row_and_final_states_have_no_way_out() -> None:
    assert set(TRANSITIONS) == set(STATES)
    assert TRANSITIONS[State.STOPPED] == TRANSITIONS[State.INTERRUPTED] == frozenset()
    assert TRANSITIONS[State.FAILED] == {State.STOPPING}  # only to be wound up


def test_every_state_is_reachable_and_every_live_state_can_be_stopped() -> None:
    seen, todo = {State.STARTING}, [State.STARTING]
    while todo:
        for nxt in TRANSITIONS[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == set(STATES)
    for state in LIVE_STATES:
        assert state == State.STOPPING or allowed(state, State.STOPPING)
        assert allowed(state, State.INTERRUPTED)
    for state in FINISHED_STATES:
        assert state == State.FAILED or not TRANSITIONS[state]


def test_check_path_names_each_forbidden_change() -> None:
    assert check_path(["starting", "running", "stopping", "stopped"]) == []
    assert check_path(["starting", "failed", "stopping", "failed"]) == []
    assert check_path(["starting", "stopped", "running"]) == [
        "starting -> stopped",
        "stopped -> running",
    ]


def test_move_refuses_an_illegal_change_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[State, str]] = []
    life = Lifecycle("set 9", lambda state, detail: seen.append((state, detail)))
    assert life.move(State.RUNNING)
    assert not life.move(State.RUNNING, only_from=(State.STARTING,))  # quietly elsewhere
    with caplog.at_level(logging.ERROR, logger="labd.lifecycle"):
        assert not life.move(State.STOPPED)
    assert "set 9: refused an illegal change running -> stopped" in caplog.text
    assert life.move(State.FAILED, "boom")
    assert life.move(State.STOPPING) and life.final() == State.FAILED
    assert life.move(life.final())
    assert seen == [(State.RUNNING, ""), (State.FAILED, "boom"), (State.STOPPING, ""),
                    (State.FAILED, "")]  # fmt: skip
    assert life.error == "boom" and not life.live


# --- racy paths, with real processes -----------------------------------------------------
@pytest.fixture
def watched(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[Lab, int], None]]:
    """``check(lab, id)``: the set's recorded events follow the table; and at the end,
    no change was refused anywhere."""

    def check(lab: Lab, set_id: int) -> None:
        events = lab.inspect(set_id)["events"]
        states = [e["state"] for e in events]
        assert states[0] == State.STARTING
        assert check_path(states) == [], states
        assert State(states[-1]) in FINISHED_STATES, states

    with caplog.at_level(logging.ERROR, logger="labd.lifecycle"):
        yield check
    assert "illegal" not in caplog.text


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as exc:
            out.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _state(lab: Lab, set_id: int | None = None) -> str | None:
    sets = lab.status([set_id]) if set_id else lab.status()
    return sets[0]["state"] if sets else None


def test_stop_during_start(make_lab: MakeLab, watched: Callable[[Lab, int], None]) -> None:
    lab = make_lab()
    t, out = _in_thread(lambda: lab.spawn("fake", 40, {"interval": 0.05}))
    wait_for(lambda: _state(lab) == "starting", 10, "the set to be starting")
    set_id = lab.status()[0]["id"]
    with pytest.raises(SetBusy, match=f"set {set_id} is busy \\(starting\\)"):
        lab.stop([set_id])  # a conflicting stop fails fast ...
    stopped = lab.stop("all")  # ... while "stop all" waits for the start, then stops it
    t.join(30)
    assert out and out[0]["id"] == set_id
    assert [s["state"] for s in stopped] == ["stopped"]
    watched(lab, set_id)


def test_worker_death_during_stop(make_lab: MakeLab, watched: Callable[[Lab, int], None]) -> None:
    lab = make_lab()
    set_id = spawn(lab, 3, slow_stop=2.0)
    wait_for(lambda: one(lab, set_id)["attempted"] > 0, 5, "the set to count")
    counters = pids(one(lab, set_id), "counter")
    t, out = _in_thread(lambda: lab.stop([set_id]))
    wait_for(lambda: _state(lab, set_id) == "stopping", 5, "the stop to begin")
    sigkill(counters[0])  # dies while it lingers: expected to end, so no degradation
    t.join(30)
    final = out[0][0]
    assert final["state"] == "stopped"
    assert final["lost"] == 0 and final["value"] == final["attempted"]
    watched(lab, set_id)


def test_manager_death_during_spawn(make_lab: MakeLab, watched: Callable[[Lab, int], None]) -> None:
    lab = make_lab(registry=Registry.of(ManagerValue, FakeCounter))
    manager = lab.manager.pid
    assert manager is not None
    t, out = _in_thread(lambda: lab.spawn("manager", 30, {"interval": 0.05}))
    wait_for(lambda: _state(lab) == "starting", 10, "the set to be starting")
    set_id = lab.status()[0]["id"]
    sigkill(manager)
    t.join(30)
    assert out and (isinstance(out[0], SetError) or out[0]["id"] == set_id)
    final = wait_for(
        lambda: (s := one(lab, set_id))["stopped_at"] and s, 20, "the set to be wound up"
    )
    assert final["state"] == "failed"
    assert not any(p["alive"] for p in final["processes"])
    watched(lab, set_id)
    # the spawn may have failed on its own before labd's watch saw the Manager go
    wait_for(lambda: lab.manager.restarts >= 1, 10, "labd to notice the Manager died")
    again = spawn(lab, 2, "manager")  # a new Manager serves the next set
    assert [s["state"] for s in lab.stop([again])] == ["stopped"]


def test_shutdown_during_a_stop(make_lab: MakeLab, watched: Callable[[Lab, int], None]) -> None:
    lab = make_lab()
    slow = spawn(lab, 2, slow_stop=1.5)
    other = spawn(lab, 2)
    wait_for(lambda: all(s["attempted"] > 0 for s in lab.status()), 5, "both sets to count")
    t, out = _in_thread(lambda: lab.stop([slow]))
    wait_for(lambda: _state(lab, slow) == "stopping", 5, "the stop to begin")
    close(lab)  # waits for the stop under way, stops the other set, releases everything
    t.join(30)
    assert out[0][0]["state"] == "stopped"
    store = Store(lab.state_dir / FILENAME)  # the closed Lab's history, read afresh
    stored = {i: store.get(i) for i in (slow, other)}
    store.close()
    assert {i: row["state"] for i, row in stored.items() if row} == {
        slow: "stopped",
        other: "stopped",
    }
    for set_id, row in stored.items():
        assert row is not None
        states = [e["state"] for e in row["events"]]
        assert check_path(states) == [] and states[-1] == "stopped", (set_id, states)
