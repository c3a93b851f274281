"""A labd killed with SIGKILL, with everything in its process group (its forkserver,
Manager server and resource tracker, as when a service's whole cgroup is killed): the
next labd shows the interrupted sets with the figures of their last stored sample, and
clears what the dead one left (its Manager directory, multiprocessing's directory with
the forkserver's socket, its semaphores in /dev/shm).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import psutil
import pytest
from helpers import wait_for

from labd.store import FILENAME
from labd.testing import running, shm_mapped

SETS = (
    ("shared", 2, '{"interval": "0", "lock": "yes"}'),  # the Value's lock: a semaphore
    ("queue", 2, '{"interval": "0.01"}'),  # the queue's locks: semaphores
    ("manager", 1, '{"interval": "0.01"}'),
)


def last_samples(db: Path, set_id: int) -> list[tuple[int, int, int]]:
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(
            "SELECT value, attempted, lost FROM samples WHERE set_id = ?"
            " ORDER BY at DESC, rowid DESC LIMIT 2",
            (set_id,),
        ).fetchall()
    finally:
        conn.close()


@pytest.mark.daemon
def test_a_killed_labd_leaves_figures_and_no_remains(labd_factory) -> None:
    first = labd_factory()
    db = first.state_dir / FILENAME
    conn = first.connect()
    ids = [json.loads(conn.root.spawn(*spec))["id"] for spec in SETS]
    conn.close()
    wait_for(lambda: all(len(last_samples(db, i)) == 2 for i in ids), 15, "two samples of each set")
    everything = [psutil.Process(first.pid), *first.descendants()]
    sems = {n for n in shm_mapped(everything) if n.startswith("sem.mp-")}
    assert sems, "the sets hold semaphores"
    first.allow_tracebacks = True  # the Manager set's workers meet the killed Manager
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    wait_for(lambda: not running(everything), 10, "the killed labd's processes to end")
    left = {n for n in sems if os.path.exists(f"/dev/shm/{n}")}
    assert left, "a kill of the whole group leaves semaphores behind"
    assert [p.name for p in first.root.glob("manager-*")] == [f"manager-{first.pid}"]
    # multiprocessing's temporary directory, with the forkserver's socket: labd's own,
    # beside its socket, not a /tmp/pymp-* that nobody removes after a kill
    assert [p.name for p in first.root.glob("mp-*")] == [f"mp-{first.pid}"]
    assert [p.name for p in (first.root / f"mp-{first.pid}").glob("listener-*")]
    last = {i: last_samples(db, i)[0] for i in ids}

    second = labd_factory(root=first.root, state_dir=first.state_dir)
    conn = second.connect()
    try:
        for s in json.loads(conn.root.status(tuple(ids))):
            assert s["state"] == "interrupted"
            assert (s["value"], s["attempted"], s["lost"]) == last[s["id"]], s
            assert s["attempted"] > 0
    finally:
        conn.close()
    assert [p.name for p in first.root.glob("manager-*")] == [f"manager-{second.pid}"]
    assert [p.name for p in first.root.glob("mp-*")] == [f"mp-{second.pid}"]
    still = {n for n in left if os.path.exists(f"/dev/shm/{n}")}
    assert not still, f"semaphores of the killed labd remain: {still}"
    assert "removed what 1 killed labd(s) left" in second.log_text()
