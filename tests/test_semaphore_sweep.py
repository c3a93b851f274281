"""Several labds of one user on one host: at its start a labd removes only the
semaphores its own dead predecessor (same state directory) recorded, never another
labd's, also one that no process maps at that moment (a labd closing its queues)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from helpers import Daemon, wait_for

from labd.testing import running, shm_mapped

SHM = Path("/dev/shm")
QUEUE = '{"interval": "0.01", "start_method": "spawn"}'  # the queue's locks: semaphores


def queue_set(daemon: Daemon) -> tuple[int, set[str]]:
    """Start a queue set on ``daemon``; its id and the semaphores labd and it map."""
    conn = daemon.connect()
    try:
        set_id = json.loads(conn.root.spawn("queue", 1, QUEUE))["id"]
    finally:
        conn.close()
    procs = [psutil.Process(daemon.pid), *daemon.descendants()]
    return set_id, {n for n in shm_mapped(procs) if n.startswith("sem.mp-")}


def value(daemon: Daemon, set_id: int) -> int:
    conn = daemon.connect()
    try:
        return int(json.loads(conn.root.status((set_id,)))[0]["value"])
    finally:
        conn.close()


@pytest.mark.daemon
def test_a_restart_removes_only_what_its_own_killed_predecessor_left(labd_factory) -> None:
    other = labd_factory()
    other_id, other_sems = queue_set(other)
    killed = labd_factory()
    _, killed_sems = queue_set(killed)
    assert other_sems and killed_sems and not other_sems & killed_sems
    # another process's semaphore that nothing maps now (another labd closing its queues)
    foreign = SHM / f"sem.mp-test-{os.getpid()}"
    foreign.write_bytes(bytes(32))
    try:
        everything = [psutil.Process(killed.pid), *killed.descendants()]
        killed.allow_tracebacks = True
        os.killpg(killed.pid, signal.SIGKILL)  # its resource tracker too: nothing unlinks
        killed.wait()
        wait_for(lambda: not running(everything), 10, "the killed labd's processes to end")
        assert all((SHM / n).exists() for n in killed_sems), "the kill left its semaphores"

        again = labd_factory(root=killed.root, state_dir=killed.state_dir)
        still = {n for n in killed_sems if (SHM / n).exists()}
        assert not still, f"the killed labd's recorded semaphores remain: {still}"
        gone = {n for n in other_sems if not (SHM / n).exists()}
        assert not gone, f"the restart removed the running labd's semaphores: {gone}"
        assert foreign.exists(), "the restart removed a semaphore it never recorded"
        assert "semaphore(s) a killed labd left" in again.log_text()
        before = value(other, other_id)
        wait_for(lambda: value(other, other_id) > before, 10, "the other labd's set to go on")
    finally:
        foreign.unlink(missing_ok=True)
