"""One set's trouble stays its own (issue 11, finding 4): a dying forkserver, a stopped
Manager server, a plugin that hangs or exits, a history write that fails during a stop.
Each affects only the set or plugin at fault, is bounded in time, and is said in one line."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import rpyc
from daemonkit import DaemonFactory, fakes_env
from helpers import Daemon, wait_for
from hostile import EXITS, EXITS_AT_IMPORT, HOOKS

from labd.testing import running

pytestmark = pytest.mark.daemon
PACED = '{"interval": 0.01}'


def status(conn: rpyc.Connection, set_id: int) -> dict[str, Any]:
    return json.loads(conn.root.status((set_id,)))[0]  # type: ignore[no-any-return]


def spawn(conn: rpyc.Connection, mechanism: str, params: str = PACED, n: int = 1) -> int:
    return int(json.loads(conn.root.spawn(mechanism, n, params))["id"])


def keeps_running(conn: rpyc.Connection, ids: list[int], more: int) -> None:
    """Every set in ``ids`` counts ``more`` increments on, and is running all along."""
    start = {i: status(conn, i)["attempted"] for i in ids}

    def progressed() -> bool:
        now = {i: status(conn, i) for i in ids}
        for i, s in now.items():
            assert s["state"] == "running", f"set {i} is {s['state']}: {s['error']}"
        return all(s["attempted"] >= start[i] + more for i, s in now.items())

    wait_for(progressed, 30, f"sets {ids} to go on counting", every=0.1)


def child_of(d: Daemon, matches: Any) -> psutil.Process:
    def find() -> psutil.Process | None:
        for p in d.descendants():
            try:
                if matches(p):
                    return p
            except psutil.Error:
                continue
        return None

    return wait_for(find, 10, "a process of labd's")


@pytest.fixture
def hostile(labd_factory: DaemonFactory) -> Daemon:
    return labd_factory(env=fakes_env(HOOKS))


@pytest.fixture
def conn(hostile: Daemon) -> Iterator[rpyc.Connection]:
    c = hostile.connect()
    yield c
    c.close()


def test_a_plugin_that_exits_at_import_is_reported_and_labd_runs(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(env=fakes_env(EXITS))
    c = d.connect()
    try:
        listed = {m["name"]: m for m in json.loads(c.root.mechanisms())}
        raised = ("SystemExit: 3", "KeyboardInterrupt", "SystemExit: 4")
        for name, why in zip(EXITS_AT_IMPORT, raised, strict=True):
            assert f"failed to load: {why}" in listed[name]["error"], listed[name]
        c.root.stop((spawn(c, "fake"),))
    finally:
        c.close()


def test_a_hanging_observe_degrades_its_set_alone(conn: rpyc.Connection) -> None:
    hung = spawn(conn, "hang_observe")
    fine = spawn(conn, "fake")
    wait_for(lambda: status(conn, hung)["state"] == "degraded", 10, "the hung set to degrade")
    assert "observe() did not return" in status(conn, hung)["error"]
    keeps_running(conn, [fine], 100)
    stopped = json.loads(conn.root.stop("all"))
    assert [s["state"] for s in stopped] == ["stopped", "stopped"]


@pytest.mark.timeout(90)
def test_hanging_setup_and_teardown_fail_their_set_and_shutdown_stays_bounded(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(("--stop-timeout", "8"), env=fakes_env(HOOKS))
    c = d.connect()
    with pytest.raises(Exception, match=r"setup\(\) did not return within 10 s"):
        c.root.spawn("hang_setup", 1, PACED)
    spawn(c, "hang_teardown")
    spawn(c, "fake")
    pending = threading.Thread(target=_try_spawn, args=(d, "hang_setup"), daemon=True)
    pending.start()  # a spawn still in its setup() when labd is told to stop
    wait_for(lambda: "hang_setup 1 started" in d.log_text() or _setups(d) >= 2, 10, "2nd setup")
    c.close()
    _stops_within(d, 8.0, patience=60)
    assert "teardown() did not return within" in d.log_text()


def _try_spawn(d: Daemon, mechanism: str) -> None:
    try:
        with d.connect() as c:
            c.root.spawn(mechanism, 1, PACED)
    except Exception:
        pass  # labd stops meanwhile: this spawn may fail or be cut off


def _setups(d: Daemon) -> int:
    with sqlite3.connect(d.state_dir / "history.sqlite3") as db:
        (n,) = db.execute("SELECT COUNT(*) FROM sets WHERE mechanism = 'hang_setup'").fetchone()
    return int(n)


def test_a_killed_forkserver_fails_no_set_and_comes_back(
    hostile: Daemon, conn: rpyc.Connection
) -> None:
    ids = [spawn(conn, "fake"), spawn(conn, "manager", '{"interval": 0.01, "lock": true}')]
    manager = child_of(hostile, _serves_the_manager)
    server = child_of(hostile, _the_forkserver(hostile))
    assert manager.ppid() == server.pid  # the Manager server is the forkserver's child too
    server.kill()
    wait_for(lambda: not running([server]), 5, "the forkserver to die")
    keeps_running(conn, ids, 200)
    assert running([manager]), "the Manager server died with the forkserver"
    ids.append(spawn(conn, "queue"))  # the next spawn starts a new forkserver
    keeps_running(conn, ids, 50)
    for s in json.loads(conn.root.stop("all")):
        assert s["state"] == "stopped" and s["lost"] == 0, s


def test_with_the_forkserver_gone_a_dead_manager_is_still_seen_and_reaped(
    hostile: Daemon, conn: rpyc.Connection
) -> None:
    managed = spawn(conn, "manager")
    manager = child_of(hostile, _serves_the_manager)
    server = child_of(hostile, _the_forkserver(hostile))
    server.kill()
    wait_for(lambda: manager.ppid() == hostile.pid, 5, "the orphaned Manager to come to labd")
    keeps_running(conn, [managed], 50)
    manager.kill()
    wait_for(lambda: status(conn, managed)["state"] == "failed", 10, "the Manager's set to fail")
    assert "the Manager server died" in status(conn, managed)["error"]
    wait_for(lambda: _reaped(manager), 5, "labd to reap the dead Manager server")
    again = spawn(conn, "manager")  # a new forkserver forks a new Manager server
    keeps_running(conn, [again], 50)
    assert [s["state"] for s in json.loads(conn.root.stop((again,)))] == ["stopped"]


def _the_forkserver(d: Daemon) -> Any:
    return lambda p: p.ppid() == d.pid and "forkserver" in " ".join(p.cmdline())


def _reaped(p: psutil.Process) -> bool:
    try:
        p.status()  # a zombie still has one
    except psutil.NoSuchProcess:
        return True
    return False


def test_a_stopped_manager_server_freezes_only_the_sets_using_it(
    hostile: Daemon, conn: rpyc.Connection
) -> None:
    managed = spawn(conn, "manager")
    timed = spawn(conn, "queue", '{"interval": 0.01, "duration": 3}')
    server = child_of(hostile, _serves_the_manager)
    server.suspend()
    try:
        wait_for(lambda: status(conn, managed)["state"] == "degraded", 10, "the managed set")
        wait_for(lambda: status(conn, timed)["state"] == "stopped", 15, "the timed set's end")
        ran = status(conn, timed)
        assert ran["stopped_at"] - ran["started_at"] < 8, ran
        assert ran["attempted"] == ran["value"] > 0
    finally:
        server.resume()
    conn.root.stop("all")


@pytest.mark.timeout(60)
def test_labd_stops_in_bounds_with_its_manager_server_stopped_and_ends_it(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory()
    server = child_of(d, _serves_the_manager)
    server.suspend()  # it will never answer the shutdown message
    _stops_within(d, 5.0)
    assert "the Manager's shutdown did not return within 3 s" in d.log_text()
    wait_for(lambda: not running([server]), 5, "the stopped Manager server to be killed")


@pytest.mark.timeout(60)
def test_labd_stops_promptly_after_its_forkserver_died_and_ends_its_manager(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory()
    manager = child_of(d, _serves_the_manager)
    child_of(d, _the_forkserver(d)).kill()
    wait_for(lambda: manager.ppid() == d.pid, 5, "the orphaned Manager to come to labd")
    _stops_within(d, 2.5)  # multiprocessing, believing the server dead, asks it nothing
    assert "did not end: killing it" not in d.log_text()
    assert not running([manager])


def _stops_within(d: Daemon, seconds: float, patience: float = 30) -> None:
    """SIGTERM labd: it exits 0, within ``seconds`` of the signal."""
    start = time.monotonic()
    d.send(signal.SIGTERM)
    assert d.wait(timeout=patience) == 0
    assert time.monotonic() - start <= seconds, d.log_text()


def _serves_the_manager(p: psutil.Process) -> bool:
    return any("manager-" in (c.laddr or "") for c in p.net_connections(kind="unix"))


@pytest.mark.timeout(90)
def test_a_history_write_failing_during_stop_still_stops_the_set(
    hostile: Daemon, conn: rpyc.Connection
) -> None:
    set_id = spawn(conn, "fake", '{"interval": 0}')
    procs = json.loads(conn.root.inspect(set_id))["processes"]
    workers = [psutil.Process(p["pid"]) for p in procs]
    db = sqlite3.connect(hostile.state_dir / "history.sqlite3", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
    answer: list[Any] = []

    def stop() -> None:
        with hostile.connect() as c:
            try:
                answer.append(json.loads(c.root.stop((set_id,))))
            except Exception as exc:
                answer.append(exc)

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:  # the stop goes on while the history cannot be written
        wait_for(lambda: not running(workers), 30, "the set's workers to end")
    finally:
        db.execute("ROLLBACK")
        db.close()
    stopper.join(60)
    assert not isinstance(answer[0], Exception), answer[0]
    assert answer[0][0]["state"] == "stopped"
    assert status(conn, set_id)["state"] == "stopped"
