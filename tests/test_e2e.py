"""END TO END: a real ``labd`` driven by real ``labctl`` processes, as a user would.

Nothing in-process: each command is ``labctl --connect unix:SOCKET ...`` in a subprocess,
checked only through its exit code and output (the contract in DESIGN.md, "labctl").
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import psutil
import pytest
from daemonkit import DaemonFactory, Labctl
from helpers import describe, wait_for

from labd.protocol import PROCESS_KEYS, SET_KEYS
from labd.testing import running

pytestmark = [pytest.mark.e2e, pytest.mark.daemon]

EXPERIMENTS = [  # (mechanism, counters, KEY=VALUE ...)
    ("queue", 3, ["interval=0.1"]),
    ("shared", 3, ["interval=0"]),  # flat out: a few race on 2 cores; more only starve labctl
    ("shared", 2, ["interval=0", "lock=yes"]),
    ("manager", 2, ["interval=0.1"]),
    ("pipe", 2, ["interval=0.1"]),
]
RACY, LOCKED = 1, 2  # indexes in EXPERIMENTS


def by_id(statuses: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {s["id"]: s for s in statuses}


def test_a_session_with_every_builtin_mechanism(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_factory()
    ctl = Labctl(d, tmp_path)
    ctl.run("--help")
    names = {m["name"] for m in ctl.json("mechanisms")}
    assert {"shared", "manager", "queue", "pipe"} <= names

    # spawn: the plain form says the id and the variant, --json the set's status object
    first = ctl.run("spawn", EXPERIMENTS[0][0], str(EXPERIMENTS[0][1]), *EXPERIMENTS[0][2])
    said = re.match(r"started set (\d+): (\S+) (\d+)", first.stdout)
    assert said and said.group(2, 3) == (EXPERIMENTS[0][0], str(EXPERIMENTS[0][1])), first.stdout
    ids = [int(said[1])]
    for mech, n, params in EXPERIMENTS[1:]:
        started = ctl.json("spawn", mech, str(n), *params)
        assert started["mechanism"] == mech and started["counters"] == n
        ids.append(started["id"])
    assert len(set(ids)) == len(ids)

    def live() -> dict[int, dict[str, Any]]:
        return by_id(ctl.json("status"))

    now = wait_for(
        lambda: (s := live()) and all(s[i]["attempted"] > 0 for i in ids) and s,
        15,
        "every set to count (labctl status --json)",
    )
    for i, (mech, n, _) in zip(ids, EXPERIMENTS, strict=True):
        s = now[i]
        assert set(SET_KEYS) <= set(s), sorted(set(SET_KEYS) - set(s))
        assert (s["mechanism"], s["state"], s["counters"]) == (mech, "running", n)
        assert s["processes_alive"] == s["processes_total"] == n + 1
        assert "processes" not in s  # one row per set, whatever its size
    each = by_id(ctl.json("status", "--processes"))  # one inspect per set
    for i, (_, n, _) in zip(ids, EXPERIMENTS, strict=True):
        assert len(each[i]["processes"]) == n + 1
        assert all(set(PROCESS_KEYS) <= set(p) and p["alive"] for p in each[i]["processes"])
    wait_for(lambda: live()[ids[RACY]]["lost"] > 0, 10, "the racy shared set to lose updates")

    table = ctl.run("status").stdout
    for i in ids:
        assert re.search(rf"^\s*{i}\s", table, re.M), table
    assert ctl.json("inspect", str(ids[0]))["id"] == ids[0]
    wait_for(
        lambda: re.search(r"^Time: \d+$", ctl.run("tail", str(ids[0]), "-n", "3").stdout, re.M),
        5,
        "the queue printer's lines (labctl tail)",
    )
    workers = [p["pid"] for s in each.values() for p in s["processes"]]
    helpers_before = d.track()

    ctl.run("stop", "all")
    final = by_id(ctl.json("status", *map(str, ids)))
    for i in ids:
        s = final[i]
        assert s["state"] == "stopped", s
        assert s["in_flight"] == 0 and s["lost"] == s["attempted"] - s["value"], s
        assert s["attempted"] > 0 and s["processes_alive"] == 0
    assert final[ids[RACY]]["lost"] > 0
    assert final[ids[LOCKED]]["lost"] == 0 and final[ids[LOCKED]]["value"] > 0
    for i in (ids[0], ids[4]):  # queue and pipe lose nothing (manager, racy, may)
        assert final[i]["lost"] == 0 and final[i]["corrupt"] == 0, final[i]

    # only the daemon's own helpers remain: the forkserver, its resource tracker, the Manager
    assert not running(psutil.Process(pid) for pid in workers if psutil.pid_exists(pid))
    rest = d.track()
    assert {p.pid for p in rest} <= {p.pid for p in helpers_before}
    assert len(rest) <= 3, describe(rest)
    for p in rest:
        cmd = " ".join(p.cmdline())
        # the Manager runs in a spawned process of labd's own, not under the forkserver
        assert any(what in cmd for what in ("forkserver", "resource_tracker", "spawn_main")), cmd

    # failures: one line on stderr, fixed exit codes
    assert "no set 9999" in ctl.fails("stop", "9999", code=1)
    assert "nosuch" in ctl.fails("spawn", "nosuch", "1", code=1)
    ctl.run("spawn", "queue", "many", code=2)

    ctl.run("shutdown")
    assert d.wait() == 0
    assert not os.path.exists(d.socket)
    d.assert_no_leftovers()
    assert ctl.fails("status", code=3)  # nobody there, and no autostart for --connect
