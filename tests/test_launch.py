"""A set's workers are forked by its launchers (labd/launch.py, labd/worker/launcher.py):
two for a large set, leading and joining the set's process group; each worker keeps
only its own descriptors (a pipe printer sees EOF once its counters are gone, so the
stop drains, exactly); the launchers end with their workers."""

from __future__ import annotations

import json
import os

import psutil
import pytest
import rpyc
from daemonkit import DaemonFactory
from helpers import describe, wait_for

from labd.launch import PARALLEL, PARALLEL_MIN, shares
from labd.protocol import WORKER_NICE
from labd.testing import running
from labd.worker.launcher import Order

pytestmark = pytest.mark.daemon


def test_a_large_pipe_set_is_forked_by_its_launchers_and_stops_whole_and_exact(
    rpc: rpyc.Connection,
) -> None:
    counters = PARALLEL_MIN + 4
    started = json.loads(rpc.root.spawn("pipe", counters, '{"interval": 0.01}'))
    workers = [psutil.Process(p["pid"]) for p in started["processes"]]
    launchers = list({w.parent() for w in workers})
    assert len(launchers) == PARALLEL, describe(launchers)
    groups = {os.getpgid(p.pid) for p in [*launchers, *workers]}
    assert len(groups) == 1 and groups <= {x.pid for x in launchers}  # a launcher leads it
    # the launchers keep labd's priority (the forkserver's); the workers run nicer
    assert {x.nice() for x in launchers} == {launchers[0].parent().nice()}
    assert {w.nice() for w in workers} == {min(19, launchers[0].nice() + WORKER_NICE)}
    wait_for(
        lambda: json.loads(rpc.root.status((started["id"],)))[0]["value"] > 4 * counters,
        10,
        "the counters to count",
    )
    # the printer sees EOF once the counters are gone only if no other worker (nor the
    # launchers) kept a counter's write end: else the stop is cut short, and says so
    (final,) = json.loads(rpc.root.stop((started["id"],)))
    assert final["state"] == "stopped" and not final["error"], final
    assert final["lost"] == 0 and final["value"] == final["attempted"], final
    wait_for(lambda: not running([*launchers, *workers]), 5, "the launchers to end with the set")


def test_shares_split_a_large_set_in_order_and_bound_each_share_s_descriptors() -> None:
    small = [Order("counter", i, ()) for i in range(PARALLEL_MIN - 1)]
    assert shares(small, [set()] * len(small)) == [list(range(len(small)))]
    large = [Order("counter", i, ()) for i in range(100)]
    split = shares(large, [{1000 + i} for i in range(100)])
    assert [i for share in split for i in share] == list(range(100))
    assert len(split) == PARALLEL
    crowded = shares(large, [set(range(5 * i, 5 * i + 5)) for i in range(100)])
    assert [len(share) for share in crowded] == [40, 40, 20]  # 200 descriptors at most


def test_worker_nice_0_runs_the_workers_at_labds_priority(labd_factory: DaemonFactory) -> None:
    d = labd_factory(("--worker-nice", "0"), fakes=True)
    with d.connect() as conn:
        started = json.loads(conn.root.spawn("fake", 2, '{"interval": 0.05}'))
        workers = [psutil.Process(p["pid"]) for p in started["processes"]]
        assert {w.nice() for w in workers} == {psutil.Process(d.proc.pid).nice()}
        conn.root.stop((started["id"],))
