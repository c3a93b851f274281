"""No orphans, ever: whatever way labd ends, the processes of its sets end with it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess

import psutil
import pytest
from helpers import describe, wait_for

from labd.testing import running

pytestmark = pytest.mark.daemon


def _spawn_mix(conn, sets: int = 3) -> list[dict]:
    kinds = [
        ("queue", 3, '{"interval": "0.05"}'),
        ("shared", 4, '{"interval": "0"}'),
        ("manager", 2, '{"interval": "0.05"}'),
        ("pipe", 2, '{"interval": "0"}'),
    ]
    return [json.loads(conn.root.spawn(*kinds[i % len(kinds)])) for i in range(sets)]


def _worker_pids(statuses: list[dict]) -> list[int]:
    return [p["pid"] for s in statuses for p in s["processes"]]  # spawn's answer lists them


def test_sigkill_of_labd_ends_every_child(labd_factory) -> None:
    d = labd_factory()
    conn = d.connect()
    statuses = _spawn_mix(conn, 4)
    conn.close()
    everything = d.descendants()  # workers, forkserver, Manager, resource tracker
    assert len(everything) >= len(_worker_pids(statuses))
    d.send(signal.SIGKILL)
    d.wait()
    wait_for(
        lambda: not running(everything),
        5.0,
        "every child of a SIGKILLed labd to end: " + describe(running(everything)),
    )


def test_leftovers_of_an_interrupted_set_are_ended_at_next_start(labd_factory) -> None:
    first = labd_factory(fakes=True)
    conn = first.connect()
    params = '{"interval": 0.05, "helper": true}'  # each counter starts a `sleep`
    status = json.loads(conn.root.spawn("fake", 2, params))
    conn.close()
    workers = [psutil.Process(p["pid"]) for p in status["processes"]]

    def helpers() -> list[psutil.Process]:
        found = [c for w in workers for c in w.children() if c.name() == "sleep"]
        return found if len(found) == 2 else []

    # a hung set: its workers and their launcher (their parent, which leads the set's
    # group and would end it when labd dies): their daemon watch cannot run
    launchers = list({w.parent() for w in workers})
    stuck = launchers + workers + wait_for(helpers, 10, "the counters' helpers")
    for p in [*launchers, *workers]:
        p.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: all(p.status() == psutil.STATUS_STOPPED for p in [*launchers, *workers]),
            5.0,
            "the set's processes to stop",
        )
        first.send(signal.SIGKILL)
        first.wait()
        assert all(p.is_running() for p in stuck), "stopped workers outlive their daemon"
        second = labd_factory(fakes=True, state_dir=first.state_dir)
        conn = second.connect()
        found = json.loads(conn.root.status((status["id"],)))[0]
        conn.close()
        assert found["state"] == "interrupted"
        wait_for(lambda: not running(stuck), 5.0, "the leftovers and their helpers to be ended")
        assert "ended leftover process" in second.log_text()
    finally:
        for p in running(stuck):
            p.kill()


def test_sigterm_with_a_hundred_processes_stops_everything(labd_factory) -> None:
    d = labd_factory()
    conn = d.connect()
    statuses = [json.loads(conn.root.spawn("shared", 19, '{"interval": "0.05"}')) for _ in range(5)]
    conn.close()
    pids = _worker_pids(statuses)
    assert len(pids) == 100
    everything = d.descendants()
    assert d.stop(signal.SIGTERM) == 0
    # The forkserver and resource tracker see labd's end on their pipe a moment later.
    wait_for(
        lambda: not running(everything),
        5.0,
        "the children of labd to end: " + describe(running(everything)),
    )
    # /dev/shm: the session guard (conftest) fails the run on any segment we left
    assert not os.path.exists(d.socket)


def test_a_group_sweep_ends_only_processes_of_that_set() -> None:
    # a group's number can be reused once it empties: the sweep must spare strangers
    from labd.leftovers import group_members

    script = "IPCLAB_SET=7:3 sleep 600 & IPCLAB_SET=7:4 sleep 600 & sleep 600 & wait"
    shell = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        group = psutil.Process(shell.pid)
        kids = wait_for(lambda: len(group.children()) == 3 and group.children(), 10, "3 sleeps")
        marked = group_members(shell.pid, "IPCLAB_SET", "7:3")
        assert len(marked) == 1 and marked[0] in {k.pid for k in kids}
        assert psutil.Process(marked[0]).environ()["IPCLAB_SET"] == "7:3"
        assert group_members(shell.pid, "IPCLAB_SET", "7:9") == []
    finally:
        os.killpg(shell.pid, signal.SIGKILL)
        shell.wait()


def test_workers_end_their_set_when_labd_dies_and_the_launcher_cannot(labd_factory) -> None:
    # the launcher leads the set's group and ends it when labd dies, and a printer that
    # sees its stop pipe close does too; stopped, they cannot, and the counters' own
    # watch (a thread with a descriptor table of its own) must: the counters sleep 30 s
    # before counting, so nothing else of theirs would notice
    d = labd_factory(fakes=True)
    conn = d.connect()
    status = json.loads(conn.root.spawn("fake", 2, '{"interval": 0.05, "start_delay": 30}'))
    conn.close()
    workers = [psutil.Process(p["pid"]) for p in status["processes"]]
    launchers = list({w.parent() for w in workers})
    printers = [psutil.Process(p["pid"]) for p in status["processes"] if p["role"] == "printer"]
    stopped = launchers + printers
    for p in stopped:
        p.send_signal(signal.SIGSTOP)
    try:
        wait_for(
            lambda: all(p.status() == psutil.STATUS_STOPPED for p in stopped),
            5.0,
            "the set's launcher and printers to stop",
        )
        d.send(signal.SIGKILL)
        d.wait()
        wait_for(
            lambda: not running(workers + launchers),
            5.0,
            "the workers to end their set: " + describe(running(workers + launchers)),
        )
    finally:
        for p in running(workers + launchers):
            p.kill()


def _table(pid: int, tid: int) -> dict[int, str]:
    """A thread's descriptor table: fd -> what it refers to (one closed meanwhile, as
    the watch thread closes its copy's, is left out)."""
    base = f"/proc/{pid}/task/{tid}/fd"
    table = {}
    for fd in os.listdir(base):
        with contextlib.suppress(FileNotFoundError):
            table[int(fd)] = os.readlink(f"{base}/{fd}")
    return table


def _only_a_pidfd(table: dict[int, str]) -> bool:
    return [what for fd, what in table.items() if fd > 2] == ["anon_inode:[pidfd]"]


def test_a_workers_watch_thread_holds_only_the_pidfd(labd_factory) -> None:
    # two threads sharing a table make every system call on a descriptor take and drop
    # a reference on its file: the watch thread keeps its own, holding only labd's pidfd
    d = labd_factory()
    conn = d.connect()
    status = json.loads(conn.root.spawn("pipe", 2, '{"interval": "0"}'))
    try:
        for p in status["processes"]:
            pid = p["pid"]
            assert any("pipe:" in what for what in _table(pid, pid).values())

            def watching(pid: int = pid) -> list[int]:
                threads = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid]
                return [t for t in threads if _only_a_pidfd(_table(pid, t))]

            wait_for(watching, 5.0, f"a thread of worker {pid} with a table of its own")
    finally:
        conn.root.stop((status["id"],))
        conn.close()
