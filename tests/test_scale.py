"""A lab host that holds a class (issue 12): status is one row per set whatever its size,
served from a snapshot shared by every caller; a spawn does not hold other clients up;
a spawn the machine cannot hold is refused up front, saying why. Not timed: the speed
goals are measured by bench/scale.py against supervisor and circus side by side."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rpyc
from fakes import FakeCounter
from helpers import short_dir, wait_for

from labd import capacity, launch
from labd.errors import LimitError
from labd.lab import Lab, Limits
from labd.protocol import PROCESS_KEYS, SET_KEYS
from labd.registry import Registry
from labd.worker import board, pacing
from labd.worker.contexts import CounterContext, WorkerSpec

FAST = json.dumps({"interval": 0.05})
#: runs the rest of its command line with at most N open files (ulimit -n N)
NOFILE = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); os.execvp(sys.argv[2], sys.argv[2:])"
)


def call(conn: rpyc.Connection, method: str, *args: Any) -> Any:
    return json.loads(getattr(conn.root, method)(*args))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path / "state", registry=Registry.of(FakeCounter), runtime_dir=short_dir())
    lab.start()
    yield lab
    lab.close()


@pytest.mark.daemon
def test_a_status_record_is_one_row_and_inspect_lists_the_processes(
    rpc: rpyc.Connection,
) -> None:
    sid = call(rpc, "spawn", "fake", 5, FAST)["id"]
    wait_for(lambda: call(rpc, "status", (sid,))[0]["attempted"] > 0, 10, "increments")
    (row,) = call(rpc, "status", (sid,))
    assert set(SET_KEYS) <= set(row) and "processes" not in row, sorted(row)
    assert row["processes_alive"] == row["processes_total"] == 6  # 5 counters, 1 printer

    detail = call(rpc, "inspect", sid)
    assert len(detail["processes"]) == 6
    assert all(set(PROCESS_KEYS) <= set(p) and p["alive"] for p in detail["processes"])
    assert all(p["rss"] > 0 and p["uss"] > 0 for p in detail["processes"])
    memory = detail["memory_per_worker"]
    assert 0 < memory["uss"] <= memory["rss"], memory

    (final,) = call(rpc, "stop", (sid,))
    assert final["processes_alive"] == 0 and "processes" not in final
    ended = call(rpc, "inspect", sid)["processes"]
    assert len(ended) == 6 and all(not p["alive"] and p["exitcode"] == 0 for p in ended)


def test_the_status_snapshot_is_served_unchanged_between_ticks(lab: Lab) -> None:
    sid = lab.spawn("fake", 2, {"interval": 0})["id"]  # flat out: figures change each tick
    first = wait_for(lambda: lab.status()[0]["attempted"] > 0 and lab.status_text(), 10, "work")
    same = 0
    for _ in range(200):
        before = lab.snapshot_generation
        a, b = lab.status_text(), lab.status_text([])
        if lab.snapshot_generation == before:
            assert b is a  # the very same text: built once, not per call
            same += 1
    assert same > 0, "every pair of calls straddled a sampler tick"
    wait_for(lambda: lab.status_text() != first, 5, "the next tick's snapshot")
    assert [s["id"] for s in json.loads(lab.status_text([sid, sid]))] == [sid, sid]


@pytest.mark.daemon
def test_status_answers_while_a_large_set_starts(labd_daemon: Any) -> None:
    spawner, watcher = labd_daemon.connect(), labd_daemon.connect()
    answer: list[Any] = []
    thread = threading.Thread(
        target=lambda: answer.append(call(spawner, "spawn", "fake", 120, FAST)), daemon=True
    )
    try:
        thread.start()
        seen = wait_for(
            lambda: [s for s in call(watcher, "status") if s["state"] == "starting"],
            30,
            "status to show the set while it starts",
        )
        assert seen[0]["processes_alive"] < seen[0]["processes_total"] == 121
        assert thread.is_alive(), "the spawn had returned: status did not answer meanwhile"
        thread.join(120)
        assert answer and answer[0]["state"] == "running"
    finally:
        thread.join(120)
        spawner.close()
        watcher.close()


@pytest.mark.daemon
def test_a_spawn_above_the_machines_open_files_is_refused_with_the_reason(
    labd_factory: Any,
) -> None:
    d = labd_factory(fakes=True, wrapper=[sys.executable, "-c", NOFILE, "120"])
    with d.connect() as conn:
        with pytest.raises(Exception, match=r"open files .*\(ulimit -n\)") as info:
            call(conn, "spawn", "fake", 200, FAST)
        assert type(info.value).__name__ == "LimitError"
        assert call(conn, "status") == []  # refused up front: no set, no process
        small = call(conn, "spawn", "fake", 2, FAST)  # what fits still starts
        assert small["state"] == "running"


def test_a_spawn_above_the_memory_available_is_refused_with_the_reason() -> None:
    machine = capacity.Machine(
        mem_available=1 << 30, mem_total=2 << 30, tasks=[], files_limit=1 << 20, files_open=10
    )
    capacity.check(100, 5 << 20, machine)  # 500 MiB of 768 MiB: fits
    with pytest.raises(LimitError, match=r"1,000 MiB of memory .* 768 MiB is available"):
        capacity.check(200, 5 << 20, machine)
    tasks = capacity.Machine(None, None, [("ulimit -u of 500", 90)], 1 << 20, 10)
    with pytest.raises(LimitError, match=r"ulimit -u of 500 leaves 90"):
        capacity.check(40, 5 << 20, tasks)


def test_the_machine_check_counts_each_sets_launchers() -> None:
    tasks = capacity.Machine(None, None, [("ulimit -u of 500", 120)], 1 << 20, 10)
    capacity.check(40, 5 << 20, tasks)  # 120 tasks for 40 workers: just fits
    with pytest.raises(
        LimitError, match=r"42 more processes \(40 workers, 2 launchers\).* 122 tasks"
    ):
        capacity.check(40, 5 << 20, tasks, launchers=2)
    memory = capacity.Machine(1 << 30, 2 << 30, [], 1 << 20, 10)  # 768 MiB free of reserve
    capacity.check(96, 8 << 20, memory)
    with pytest.raises(LimitError, match=r"97 more processes .* 776 MiB of memory"):
        capacity.check(96, 8 << 20, memory, launchers=1)


def test_the_process_limits_count_each_sets_launchers(tmp_path: Path) -> None:
    workers = 21  # 20 counters and a printer, started by one launcher per core (up to 2)
    total = workers + launch.launchers_for(workers)
    limits = Limits(total=total)
    lab = Lab(
        tmp_path / "s", registry=Registry.of(FakeCounter), runtime_dir=short_dir(), limits=limits
    )
    lab.start()
    try:
        lab.spawn("fake", 20, json.loads(FAST))  # exactly the limit
        with pytest.raises(
            LimitError, match=rf"{total + 3} processes \(counters, printers and their launchers\)"
        ):
            lab.spawn("fake", 1, json.loads(FAST))  # 1 counter, 1 printer, 1 launcher more
    finally:
        lab.close()


def test_each_set_ticks_at_a_phase_of_its_own() -> None:
    phases = sorted(pacing.set_phase(i) for i in range(1, 9))
    assert pacing.set_phase(1) == 0.0 and all(0 <= p < 1 for p in phases)
    assert min(b - a for a, b in itertools.pairwise([*phases, 1.0])) > 0.05  # spread out
    reader, writer = multiprocessing.Pipe(duplex=False)
    spec = WorkerSpec(3, "counter", 0, 1, 1, {"interval": 0.05}, phase=pacing.set_phase(3))
    slots = memoryview(bytearray(8 * board.size(1, 1))).cast("q")
    try:
        ctx = CounterContext(spec, slots, reader)
        for shift in (0.0, 0.5):  # a counter's ticks, a polling printer's
            dues = list(itertools.islice(ctx.ticks(shift), 3))
            ticks = [due / 0.05 - spec.phase - shift for due in dues]  # whole numbers
            assert all(abs(k - round(k)) < 1e-6 for k in ticks), (spec.phase, ticks)
            assert [round(b - a, 6) for a, b in itertools.pairwise(ticks)] == [1.0, 1.0]
    finally:
        reader.close()
        writer.close()
