"""Unit tests of the core :class:`labd.lab.Lab`, in-process, with fake mechanisms.

Real child processes (forkserver), a real history store in a temporary state dir; the
only seam used is the constructor's ``registry`` (``Registry.of(...)``), as designed.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from fakes import CRASH_CODE, BrokenSetup, FakeCounter
from helpers import sigkill, wait_for
from labkit import FAST, MakeLab, close, one, pids, spawn

from labd.errors import (
    LimitError,
    MechanismError,
    NoSuchSet,
    ParamError,
    SetBusy,
    SetError,
    UsageError,
)
from labd.lab import Limits
from labd.protocol import INSPECT_KEYS
from labd.registry import Entry, Registry
from labd.store import FILENAME, Store
from labd.testing import check_accounting, running

pytestmark = pytest.mark.daemon


# --- life of a set -----------------------------------------------------------------------
def test_spawn_starts_real_processes_and_the_figures_move(make_lab: MakeLab) -> None:
    lab = make_lab()
    status = lab.spawn("fake", 3, dict(FAST))
    sid = status["id"]
    assert status["state"] == "running"
    assert (status["counters"], status["printers"]) == (3, 1)
    roles = sorted((p["role"], p["index"]) for p in status["processes"])
    assert roles == [("counter", 0), ("counter", 1), ("counter", 2), ("printer", 0)]
    for pid in pids(status):
        assert psutil.Process(pid).ppid() != os.getpid()  # forkserver children, not forks
        assert psutil.pid_exists(pid)

    first = wait_for(lambda: (s := one(lab, sid))["attempted"] >= 6 and s, 5, "increments")
    assert 0 < first["value"] <= first["attempted"]
    later = wait_for(
        lambda: (s := one(lab, sid))["attempted"] > first["attempted"] + 6 and s,
        5,
        "the figures to move on",
    )
    assert later["value"] > first["value"]
    wait_for(lambda: one(lab, sid)["rate"] > 0, 3, "a rate")
    wait_for(
        lambda: all(p["rss"] for p in one(lab, sid)["processes"]),
        3,
        "CPU and memory of each process (sampled once a second)",
    )
    assert [s["id"] for s in lab.status()] == [sid]


def test_stop_ends_every_process_with_exact_accounting(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 3, interval=0)  # flat out
    wait_for(lambda: one(lab, sid)["attempted"] > 1000, 5, "flat-out increments")
    procs = [psutil.Process(pid) for pid in pids(one(lab, sid))]

    (final,) = lab.stop([sid])
    assert final["state"] == "stopped"
    assert final["attempted"] > 1000
    check_accounting(final)
    assert final["lost"] == 0  # the fake is exact
    assert final["corrupt"] == 0
    assert final["stopped_at"] >= final["started_at"]
    assert final["processes_alive"] == 0 and "processes" not in final  # one row, however big
    assert all(not p["alive"] and p["exitcode"] == 0 for p in one(lab, sid)["processes"])
    assert not running(procs)
    assert lab.status([sid])[0] == final  # stable once stopped
    inspected = lab.inspect(sid)  # also once stopped, while the Lab still holds the set
    assert len(inspected["per_counter"]) == 3
    check_accounting(inspected)  # per_counter sums to attempted
    events = [e["state"] for e in inspected["events"]]
    assert events == ["starting", "running", "stopping", "stopped"]


def test_a_killed_counter_is_noticed_within_a_second(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 3)
    wait_for(lambda: one(lab, sid)["attempted"] >= 3, 5, "increments")
    victim = pids(one(lab, sid), "counter")[1]

    os.kill(victim, signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: one(lab, sid)["state"] == "degraded", 1.0, "the set to degrade")
    assert time.monotonic() - t0 < 1.0
    status = one(lab, sid)
    dead = [p for p in status["processes"] if p["pid"] == victim]
    assert dead == [dict(dead[0], alive=False, exitcode=-signal.SIGKILL)]
    assert f"pid {victim}" in status["error"] and "-9" in status["error"]
    others = [p for p in status["processes"] if p["pid"] != victim]
    assert len(others) == 3 and all(p["alive"] for p in others)
    assert all(psutil.pid_exists(p["pid"]) for p in others)

    before = status["attempted"]
    wait_for(lambda: one(lab, sid)["attempted"] >= before + 4, 5, "the rest to keep counting")
    (final,) = lab.stop([sid])
    assert final["state"] == "stopped"
    check_accounting(final)
    assert final["lost"] in (0, 1)  # at most the increment the kill interrupted


def test_when_every_process_dies_the_set_fails(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 2)
    wait_for(lambda: one(lab, sid)["attempted"] >= 2, 5, "increments")
    for pid in pids(one(lab, sid)):
        sigkill(pid)
    wait_for(lambda: one(lab, sid)["state"] == "failed", 2, "the set to fail")
    status = wait_for(
        lambda: (s := one(lab, sid))["stopped_at"] and s, 5, "the failed set to be wound up"
    )
    assert status["state"] == "failed"
    assert "exited with code -9" in status["error"]
    assert all(not p["alive"] for p in status["processes"])
    assert status["lost"] == status["attempted"] - status["value"]
    assert [s["state"] for s in lab.stop([sid])] == ["failed"]  # stopping it is harmless
    events = [e["state"] for e in lab.inspect(sid)["events"]]
    assert events[:3] == ["starting", "running", "degraded"] and events[-1] == "failed"


def test_a_counter_exit_code_is_reported(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 2, "crashing", crash_after=3, crash_index=0)
    wait_for(lambda: one(lab, sid)["state"] == "degraded", 5, "counter 0 to crash")
    status = one(lab, sid)
    crashed = [p for p in status["processes"] if not p["alive"]]
    assert [(p["role"], p["index"], p["exitcode"]) for p in crashed] == [("counter", 0, CRASH_CODE)]
    assert re.search(rf"counter 0 \(pid \d+\) exited with code {CRASH_CODE}", status["error"])
    (final,) = lab.stop([sid])
    assert final["state"] == "stopped" and final["error"] == status["error"]


def test_duration_stops_the_set_by_itself(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 1, duration=0.5)
    status = wait_for(
        lambda: (s := one(lab, sid))["state"] == "stopped" and s,
        5,
        "the set to stop after its duration",
    )
    assert 0.5 <= status["stopped_at"] - status["started_at"] < 3.0
    assert 1 <= status["attempted"] <= 60  # ~10 ticks of 0.05 s (fewer if the host is slow)
    assert status["lost"] == 0 and status["in_flight"] == 0
    assert all(not p["alive"] and p["exitcode"] == 0 for p in status["processes"])


# --- history across restarts ---------------------------------------------------------------
def test_ids_are_never_reused_across_a_restart(make_lab: MakeLab, tmp_path: Path) -> None:
    lab = make_lab()
    first = [spawn(lab, 1), spawn(lab, 1)]
    lab.stop([first[1]])
    with pytest.raises(SetError):
        lab.spawn("broken_setup", 1, {})  # a failed set takes an id too
    close(lab)  # stops the running one

    again = make_lab()  # same state dir
    assert again.status() == []  # sets of the earlier run are not "since start"
    old = again.status(first)
    assert [s["state"] for s in old] == ["stopped", "stopped"]
    assert all(s["attempted"] == s["value"] and s["lost"] == 0 for s in old)
    new = spawn(again, 1)
    assert new == max(first) + 2  # after the failed one: never reused
    assert [s["id"] for s in again.status()] == [new]


def test_sets_left_running_by_a_dead_lab_are_interrupted(make_lab: MakeLab, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store(state / FILENAME)  # what a Lab that died mid-run leaves in its store
    sid = store.new_set("fake", "left running", 2, 1, {"interval": 0.05})
    store.set_state(sid, "running")
    store.close()

    lab = make_lab(state)
    status = one(lab, sid)
    assert status["state"] == "interrupted"
    assert status["stopped_at"] is not None
    events = lab.inspect(sid)["events"]
    assert events[-1]["state"] == "interrupted" and events[-1]["detail"]
    assert lab.stop([sid])[0]["state"] == "interrupted"  # nothing to stop, no error


# --- limits and argument checks ------------------------------------------------------------
def test_limits_per_set_and_in_total(make_lab: MakeLab) -> None:
    lab = make_lab(limits=Limits(per_set=3, total=5))
    with pytest.raises(LimitError, match=r"4 counters .* limit of 3 per set"):
        lab.spawn("fake", 4, dict(FAST))
    with pytest.raises(LimitError, match=r"4 printers .* limit of 3 per set"):
        lab.spawn("fake", 1, {**FAST, "printers": 4})
    with pytest.raises(LimitError, match=r"300 printers .* limit of 3 per set"):
        lab.spawn("fake", 1, {**FAST, "printers": 300})  # labd's limit, not a fixed 256
    sid = spawn(lab, 3)  # 5 processes: 3 counters, 1 printer, their launcher
    with pytest.raises(
        LimitError,
        match=r"8 processes \(counters, printers and their launchers\), above the limit of 5",
    ):
        lab.spawn("fake", 1, dict(FAST))
    assert [s["id"] for s in lab.status()] == [sid]
    lab.stop([sid])
    spawn(lab, 3)  # stopped sets no longer count


@pytest.mark.parametrize(
    ("mechanism", "counters", "params", "error", "names"),
    [
        ("nosuch", 1, {}, MechanismError, ["'nosuch'", "fake", "crashing"]),
        ("fake", 1, {"colour": "red"}, ParamError, ["'colour'", "slow_stop", "interval"]),
        ("fake", 1, {"interval": "fast"}, ParamError, ["interval", "'fast'", "float"]),
        ("fake", 1, {"level": 2.5}, ParamError, ["level", "int"]),
        ("fake", 1, {"level": "x"}, ParamError, ["level", "'x'"]),
        ("fake", 1, {"interval": -1}, ParamError, ["interval", "minimum"]),
        ("fake", 1, {"level": 6}, ParamError, ["level", "maximum 5"]),
        ("fake", 1, {"printers": 0}, ParamError, ["printers", "minimum"]),
        ("fake", 1, {"start_method": "teleport"}, ParamError, ["start_method", "forkserver"]),
        ("fake", 1, {"duration": float("inf")}, ParamError, ["duration", "finite"]),
        ("fake", 0, {}, UsageError, ["counters", "0"]),
        ("fake", -2, {}, UsageError, ["counters", "-2"]),
        ("fake", True, {}, UsageError, ["counters", "True"]),
    ],
)
def test_bad_requests_raise_the_right_error_naming_the_culprit(
    make_lab: MakeLab,
    mechanism: str,
    counters: int,
    params: dict[str, Any],
    error: type[Exception],
    names: list[str],
) -> None:
    lab = make_lab()
    with pytest.raises(error) as info:
        lab.spawn(mechanism, counters, params)
    assert type(info.value) is error
    message = info.value.args[0]
    assert "\n" not in message
    for name in names:
        assert name in message
    assert lab.status() == []  # nothing was started


def test_unknown_ids_raise_nosuchset(make_lab: MakeLab) -> None:
    lab = make_lab()
    for call in (
        lambda: lab.status([99]),
        lambda: lab.inspect(99),
        lambda: lab.stop([99]),
        lambda: lab.tail(99),
    ):
        with pytest.raises(NoSuchSet, match="no set 99"):
            call()


def test_a_second_stop_of_the_same_set_fails_fast(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 1, slow_stop=1.5)
    wait_for(lambda: one(lab, sid)["attempted"] >= 1, 5, "an increment")
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(lab.stop([sid])))
    first.start()
    try:
        wait_for(lambda: one(lab, sid)["state"] == "stopping", 2, "the first stop to begin")
        t0 = time.monotonic()
        with pytest.raises(SetBusy, match=f"set {sid} is already stopping"):
            lab.stop([sid])
        assert time.monotonic() - t0 < 0.5
        assert one(lab, sid)["state"] == "stopping"
        # "all" does not fail on it: it waits until the other stop has finished
        assert [s["state"] for s in lab.stop("all")] == ["stopped"]
    finally:
        first.join(10)
    assert [s["state"] for s in results[0]] == ["stopped"]


# --- plugins -----------------------------------------------------------------------------
def test_broken_plugins_are_reported_by_name_and_the_rest_works(make_lab: MakeLab) -> None:
    registry = Registry(
        [
            Entry("fake", "fakes:FakeCounter", "tests"),
            Entry("wrongname", "fakes:WrongName", "tests"),
            Entry("notamech", "fakes:NotAMechanism", "tests"),
            Entry("missing", "fakes:NoSuchClass", "tests"),
            Entry("nomodule", "ipclab_no_such_module:Thing", "tests"),
        ]
    )
    lab = make_lab(registry=registry)
    listed = {m["name"]: m for m in lab.mechanisms()}
    assert sorted(listed) == ["fake", "missing", "nomodule", "notamech", "wrongname"]
    assert "error" not in listed["fake"] and listed["fake"]["params"]
    assert "not_its_entry_name" in listed["wrongname"]["error"]
    assert "'wrongname'" in listed["wrongname"]["error"]
    assert "not a labd.Mechanism subclass" in listed["notamech"]["error"]
    assert "NoSuchClass" in listed["missing"]["error"]
    assert "ipclab_no_such_module" in listed["nomodule"]["error"]
    for name in ("wrongname", "notamech", "missing", "nomodule"):
        assert listed[name]["source"] == "tests"
        with pytest.raises(MechanismError, match=f"mechanism '{name}' failed to load"):
            lab.spawn(name, 1, {})
    sid = spawn(lab, 2)
    wait_for(lambda: one(lab, sid)["attempted"] >= 2, 5, "the good plugin to work")


def test_a_failing_setup_fails_the_set_and_nothing_else(make_lab: MakeLab) -> None:
    lab = make_lab()
    with pytest.raises(SetError, match=BrokenSetup.SETUP_ERROR) as info:
        lab.spawn("broken_setup", 2, {})
    assert "\n" not in info.value.args[0]
    (status,) = lab.status()
    assert status["state"] == "failed" and BrokenSetup.SETUP_ERROR in status["error"]
    assert status["processes_alive"] == 0 and lab.inspect(status["id"])["processes"] == []
    sid = spawn(lab, 1)
    wait_for(lambda: one(lab, sid)["attempted"] >= 1, 5, "a good set after the failed one")


# --- printers' output ----------------------------------------------------------------------
LINE = re.compile(r"Time: (\d+)")


def test_tail_serves_the_printers_lines_also_after_a_restart(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 2)
    wait_for(lambda: len(lab.tail(sid)["lines"]) >= 6, 5, "six printer lines")
    out = lab.tail(sid, 0, 100)
    seqs = [s for s, _ in out["lines"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    values = [int(LINE.fullmatch(text).group(1)) for _, text in out["lines"]]  # type: ignore[union-attr]
    assert values == sorted(values)
    assert out["state"] == "running" and out["last"] >= seqs[-1]

    newest = lab.tail(sid, 0, 3)
    assert len(newest["lines"]) == 3
    assert newest["lines"][-1][0] == newest["last"]
    assert [s for s, _ in lab.tail(sid, 2, 2)["lines"]] == [3, 4]
    later = lab.tail(sid, 1, 1000)
    assert later["lines"][0][0] == 2 and later["lines"][-1][0] == later["last"]

    (final,) = lab.stop([sid])
    done = lab.tail(sid, 0, 10_000)
    assert done["state"] == "stopped"
    assert lab.tail(sid, done["last"], 10)["lines"] == []
    assert int(LINE.fullmatch(done["lines"][-1][1]).group(1)) <= final["value"]  # type: ignore[union-attr]
    close(lab)

    again = make_lab()  # same state dir: the ring is gone, the log file remains
    replay = again.tail(sid, 0, 10_000)
    assert replay["state"] == "stopped"
    assert replay["lines"] == done["lines"]
    assert replay["last"] == done["last"]
    assert again.tail(sid, 0, 2)["lines"] == done["lines"][-2:]


def test_tail_after_means_the_same_for_a_set_of_an_earlier_run(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 1)
    wait_for(lambda: len(lab.tail(sid)["lines"]) >= 5, 5, "five printer lines")
    lab.stop([sid])
    live = lab.tail(sid, 2, 2)["lines"]
    assert [s for s, _ in live] == [3, 4]
    close(lab)
    assert make_lab().tail(sid, 2, 2)["lines"] == live


def test_a_stopped_set_is_kept_as_its_final_status(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 2)
    wait_for(lambda: len(lab.tail(sid)["lines"]) >= 3, 5, "three printer lines")
    (final,) = lab.stop([sid])
    lines = lab.tail(sid, 0, 10_000)
    detail = lab.inspect(sid)
    assert lab.status() == [final] == lab.status([sid])
    assert detail["per_counter"] and sum(detail["per_counter"]) == final["value"]
    assert {k: v for k, v in detail.items() if k not in INSPECT_KEYS} == final
    assert len(detail["processes"]) == 3 and not any(p["alive"] for p in detail["processes"])
    other = spawn(lab, 1)  # the ended set stays listed beside new ones, unchanged
    assert [s["id"] for s in lab.status()] == [sid, other]
    assert lab.status([sid]) == [final] and lab.tail(sid, 0, 10_000) == lines
    assert lab.tail(sid, 1, 2)["lines"] == lines["lines"][1:3]
    close(lab)


def test_a_set_shorter_than_a_second_keeps_its_final_sample(make_lab: MakeLab) -> None:
    lab = make_lab()
    sid = spawn(lab, 2, interval=0)
    wait_for(lambda: one(lab, sid)["attempted"] > 0, 5, "an increment")
    (final,) = lab.stop([sid])  # at once: the sampler's second may not have come
    last = lab.store.samples(sid)[-1]
    assert (last["value"], last["attempted"], last["lost"]) == (
        final["value"],
        final["attempted"],
        final["lost"],
    )
    assert last["at"] == final["stopped_at"]


def test_close_stops_every_set_and_records_it(make_lab: MakeLab) -> None:
    lab = make_lab()
    ids = [spawn(lab, 2), spawn(lab, 1, interval=0)]
    wait_for(lambda: all(s["attempted"] for s in lab.status()), 5, "both sets to count")
    procs = [psutil.Process(pid) for s in lab.status() for pid in pids(one(lab, s["id"]))]
    close(lab)
    assert not running(procs)
    again = make_lab()
    for s in again.status(ids):
        assert s["state"] == "stopped"
        assert s["lost"] == s["attempted"] - s["value"] == 0 and s["attempted"] > 0


def test_a_dead_manager_fails_only_its_sets_and_is_restarted(make_lab: MakeLab) -> None:
    from labd.mechanisms.manager import ManagerValue

    lab = make_lab(registry=Registry.of(ManagerValue, FakeCounter))
    doomed = spawn(lab, 2, "manager")
    bystander = spawn(lab, 2, "fake")
    wait_for(lambda: all(s["attempted"] > 0 for s in lab.status()), 5, "both sets to count")
    first_manager = lab.manager.pid
    assert first_manager is not None

    sigkill(first_manager)
    wait_for(lambda: one(lab, doomed)["state"] == "failed", 2, "the Manager's set to fail")
    assert "Manager" in one(lab, doomed)["error"]
    status = wait_for(
        lambda: (s := one(lab, doomed))["stopped_at"] and s,
        10,
        "the failed set's processes to be ended",
    )
    assert not any(p["alive"] for p in status["processes"])
    assert one(lab, bystander)["state"] == "running"

    again = spawn(lab, 2, "manager")  # a fresh Manager serves new sets
    wait_for(lambda: one(lab, again)["value"] > 0, 5, "a set on the new Manager")
    assert lab.manager.pid not in (None, first_manager)
    assert [s["state"] for s in lab.stop([again, bystander])] == ["stopped", "stopped"]
