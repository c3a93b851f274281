"""A cgroup per set where the host delegates one (labd.cgroups): labd runs in a cgroup
this test makes and hands over (as systemd's Delegate=yes does), each set's processes
run in the set's own cgroup, and ``cgroup.kill`` ends what escaped everything else:
helpers that left the set's group (setsid, a double fork, a scrubbed environment) whose
workers and labd were all SIGKILLed, so no subreaper was left to bring them back."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from daemonkit import DaemonFactory, Labctl, fakes_env
from helpers import Daemon, kill_all, wait_for
from hostile import ESCAPES, HOOKS

from labd.cgroups import cgroup2_mount
from labd.testing import running

pytestmark = pytest.mark.daemon


def own_cgroup(mount: Path) -> Path:
    with open("/proc/self/cgroup") as f:
        line = next(x for x in f.read().splitlines() if x.startswith("0::"))
    return mount / line[3:].lstrip("/")


@pytest.fixture
def delegated() -> Iterator[Path]:
    """A fresh cgroup below this test's own, to run labd in; killed and removed after
    (ask for it before labd_factory, whose labds must end first, by SIGTERM)."""
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 hierarchy is mounted here")
    path = own_cgroup(mount) / f"ipclab-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot make a cgroup under {path.parent}: {exc.strerror}")
    if not (path / "cgroup.kill").exists():
        path.rmdir()
        pytest.skip(f"no cgroup.kill in {path} (Linux 5.14 or later)")
    try:
        yield path
    finally:
        (path / "cgroup.kill").write_text("1")
        wait_for(lambda: "populated 0" in (path / "cgroup.events").read_text(), 10, "empty")
        for d, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):
            os.rmdir(d)


def labd_in(factory: DaemonFactory, cgroup: Path, **kw: object) -> Daemon:
    enter = f'echo $$ > {cgroup}/cgroup.procs && exec "$@"'
    return factory(env=fakes_env(HOOKS), wrapper=("sh", "-c", enter, "sh"), **kw)


def escaping_sets(d: Daemon, piddir: Path) -> tuple[list[dict], list[psutil.Process]]:
    conn = d.connect()
    try:
        sets = []
        for escape in ESCAPES:
            params = json.dumps({"interval": 0.05, "escape": escape, "piddir": str(piddir)})
            sets.append(json.loads(conn.root.spawn("escaping", 1, params)))
    finally:
        conn.close()
    files = [piddir / f"helper-{s['id']}" for s in sets]
    wait_for(lambda: all(f.exists() for f in files), 20, "every set's helper to start")
    return sets, [psutil.Process(int(f.read_text())) for f in files]


def cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(x for x in f.read().splitlines() if x.startswith("0::"))[3:]


def test_each_set_runs_in_its_own_cgroup_and_stop_kills_it(
    delegated: Path, labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_in(labd_factory, delegated)
    conn = d.connect()
    assert json.loads(conn.root.version())["containment"] == "cgroup"
    sets, helpers = escaping_sets(d, tmp_path)
    try:
        labctl = Labctl(d, tmp_path / "home")
        assert "containment: cgroup" in labctl.run("inspect", str(sets[0]["id"])).stdout
        assert {s["containment"] for s in labctl.json("status")} == {"cgroup"}
        assert cgroup_of(d.pid).endswith("/daemon")
        for s, helper in zip(sets, helpers, strict=True):
            assert cgroup_of(helper.pid).endswith(f"/set-{s['id']}"), "the helper escaped"
        conn.root.stop(tuple(s["id"] for s in sets))
        wait_for(lambda: not running(helpers), 10, "the helpers to end with their sets")
        assert not list(delegated.glob("set-*")), "a stopped set's cgroup is removed"
    finally:
        conn.close()
        kill_all(helpers)


def test_helpers_whose_labd_and_workers_were_killed_end_at_the_next_start(
    delegated: Path, labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    first = labd_in(labd_factory, delegated)
    sets, helpers = escaping_sets(first, tmp_path)
    workers = [psutil.Process(p["pid"]) for s in sets for p in s["processes"]]
    workers += list({w.parent() for w in workers})  # and their launchers, which lead the groups
    try:
        for w in workers:  # hung, so they cannot end their helpers as labd goes
            w.send_signal(signal.SIGSTOP)
        first.send(signal.SIGKILL)
        first.wait()
        for w in workers:  # then gone too (the OOM killer): no subreaper is left
            w.kill()
        wait_for(lambda: not running(workers), 10, "the workers to end")
        assert len(running(helpers)) == len(ESCAPES), "the helpers outlived labd and workers"
        second = labd_in(labd_factory, delegated, state_dir=first.state_dir)
        wait_for(lambda: not running(helpers), 10, "the next labd to end the helpers")
        assert "left in the cgroups of a dead labd's sets" in second.log_text()
    finally:
        kill_all([*workers, *helpers])


def test_without_a_delegated_cgroup_labd_says_pgroup(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Started beside this test (never alone in its cgroup), labd keeps to process
    groups and subreapers, and says so."""
    d = labd_factory()
    assert "containment: pgroup (no delegated cgroup: " in d.log_text()
    conn = d.connect()
    try:
        assert json.loads(conn.root.version())["containment"] == "pgroup"
        set_id = json.loads(conn.root.spawn("shared", 1, "{}"))["id"]
    finally:
        conn.close()
    labctl = Labctl(d, tmp_path / "home")
    assert labctl.json("status")[0]["containment"] == "pgroup"
    assert "containment: pgroup" in labctl.run("inspect", str(set_id)).stdout
