"""The history store under real faults, with a real labd: a full disk (a small tmpfs
filled by the test), a disk failing with EIO (a FUSE filesystem), another process
holding the write lock, a damaged or read-only file at start, the file deleted while
labd runs. labd keeps its sets and serves, says what is wrong (status, version, log),
refuses new sets while it cannot record them, catches up once the fault clears, and
never gives a set id twice.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import rpyc
from diskfaults import DiskFault
from helpers import labctl_command, one_line, short_dir, wait_for

from labd.errors import LabError
from labd.store import CHECK_AT_OPEN, FILENAME, Store

#: 16 printers of the fake mechanism print ~160 lines a second: a full disk soon refuses them
CHATTY = '{"interval": "0.01", "printers": "16"}'
#: root that honours file modes, as any other user must
ROOT_WITHOUT_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
"""


# --- the faults (a full disk, EIO: tests/diskfaults.py) ---------------------------------
def damage(path: Path, where: str) -> None:
    """Overwrite a page of a SQLite file with garbage: the one of the samples table (in
    the middle of the file), or the last one."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    pages = len(data) // page
    if where == "middle":
        conn = sqlite3.connect(path)
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'samples'"
        ).fetchone()
        conn.close()
        index = root - 1
        assert 0 < index < pages - 1, (index, pages)
    else:
        index = pages - 1
    data[index * page : (index + 1) * page] = bytes(range(256)) * (page // 256)
    path.write_bytes(bytes(data))


# --- reading what labd says and keeps ----------------------------------------------------
def version(conn: rpyc.Connection) -> dict[str, Any]:
    return json.loads(conn.root.version())  # type: ignore[no-any-return]


def degraded(conn: rpyc.Connection) -> dict[str, Any] | None:
    history = version(conn)["history"]
    return history if history["state"] == "degraded" else None


def status(conn: rpyc.Connection, set_id: int) -> dict[str, Any]:
    return json.loads(conn.root.status((set_id,)))[0]  # type: ignore[no-any-return]


def stored(db: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the history file as another program would (read only)."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def labctl_status(socket: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*labctl_command(), "--connect", f"unix:{socket}", "--no-autostart", "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- at run time -------------------------------------------------------------------------
@pytest.mark.daemon
def test_a_failing_disk_degrades_the_history_then_it_catches_up(
    disk_fault: DiskFault, labd_factory
) -> None:
    """A full disk (tmpfs) or a disk failing with EIO (FUSE) under a running set."""
    kind = disk_fault.kind
    d = labd_factory(fakes=True, state_dir=disk_fault.path / "state")
    db = d.state_dir / FILENAME
    conn = d.connect()
    try:
        set_id = json.loads(conn.root.spawn("fake", 1, CHATTY))["id"]
        wait_for(lambda: stored(db, "SELECT * FROM samples"), 10, "samples in the history")
        disk_fault.on()
        failed_at = time.time()
        health = wait_for(lambda: degraded(conn), 15, f"the history to report {kind}")
        assert health["reason"].startswith(kind), health
        assert f"history store degraded: {kind}" in d.log_text()
        with pytest.raises(LabError) as refused:
            conn.root.spawn("queue", 1, "{}")
        assert kind in one_line(refused.value)
        shown = labctl_status(d.socket)
        assert shown.returncode == 0 and f"history store is degraded: {kind}" in shown.stderr

        before = status(conn, set_id)["attempted"]
        wait_for(lambda: status(conn, set_id)["attempted"] > before + 20, 10, "the set to go on")
        wait_for(lambda: "lines wait in memory" in d.log_text(), 20, "printer lines to wait")
        wait_for(lambda: version(conn)["history"]["pending"] >= 3, 10, "3 writes to wait")
        ring = json.loads(conn.root.tail(set_id, 0, 40))["lines"]
        final = json.loads(conn.root.stop((set_id,)))[0]
        assert final["state"] == "stopped" and final["attempted"] > before

        disk_fault.off()
        wait_for(lambda: not degraded(conn), 15, "the history to recover")
        assert "history store recovered" in d.log_text()
        (state, final_json), *_ = stored(
            db, "SELECT state, final_json FROM sets WHERE id = ?", set_id
        )
        assert state == "stopped" and json.loads(final_json)["attempted"] == final["attempted"]
        during = stored(db, "SELECT at FROM samples WHERE set_id = ? AND at > ?", set_id, failed_at)
        assert len(during) >= 3, f"samples taken during the {kind} are in the history"
        first = ring[0][0]
        wait_for(
            lambda: json.loads(conn.root.tail(set_id, first - 1, len(ring)))["lines"] == ring,
            15,
            "the printer lines of the outage to be in the set's log file",
        )
        assert json.loads(conn.root.spawn("queue", 1, "{}"))["id"] == set_id + 1
    finally:
        conn.close()


@pytest.mark.daemon
def test_a_write_lock_held_by_another_process_degrades_then_catches_up(labd_factory) -> None:
    d = labd_factory()
    db = d.state_dir / FILENAME
    conn = d.connect()
    locker = None
    try:
        set_id = json.loads(conn.root.spawn("queue", 1, '{"interval": "0.05"}'))["id"]
        wait_for(lambda: stored(db, "SELECT * FROM samples"), 10, "samples in the history")
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        locked_at = time.time()
        health = wait_for(lambda: degraded(conn), 15, "the history to report the lock")
        assert health["reason"].startswith("locked by another process"), health
        with pytest.raises(LabError) as refused:
            conn.root.spawn("queue", 1, "{}")
        assert "locked by another process" in one_line(refused.value)
        wait_for(lambda: version(conn)["history"]["pending"] >= 3, 15, "3 writes to wait")
        final = json.loads(conn.root.stop((set_id,)))[0]
        assert final["state"] == "stopped"
        events = json.loads(conn.root.inspect(set_id))["events"]
        assert [e["state"] for e in events] == ["starting", "running", "stopping", "stopped"]
        assert locker.stdin is not None
        locker.stdin.close()
        locker.wait(10)
        wait_for(lambda: not degraded(conn), 15, "the history to recover")
        rows = stored(db, "SELECT state, final_json FROM sets WHERE id = ?", set_id)
        assert rows[0][0] == "stopped" and json.loads(rows[0][1])["value"] == final["value"]
        during = stored(db, "SELECT at FROM samples WHERE set_id = ? AND at > ?", set_id, locked_at)
        assert len(during) >= 2, "samples taken under the lock are in the history"
    finally:
        conn.close()
        if locker is not None:
            if locker.poll() is None:
                locker.kill()
                locker.wait()
            for pipe in (locker.stdin, locker.stdout):
                if pipe is not None:
                    pipe.close()


# --- at start ----------------------------------------------------------------------------
def _a_history(sets: int = 3, samples: int = 300) -> tuple[Path, int]:
    """A state dir whose history holds ``sets`` stopped sets with their samples, as an
    earlier labd left it; and their highest id."""
    state = short_dir() / "state"
    state.mkdir(mode=0o700)
    store = Store(state / FILENAME)
    ids = [store.new_set("queue", "", 1, 1, {}) for _ in range(sets)]
    for set_id in ids:
        store.add_samples(
            [(set_id, float(t), t, t, 0, 0, 0, 1.0, None, None) for t in range(samples)]
        )
        store.set_state(set_id, "stopped")
    store.close()
    return state, max(ids)


def _moved_aside(state: Path, kind: str) -> list[Path]:
    return sorted(state.glob(f"{FILENAME}.{kind}-*[0-9]Z"))


@pytest.mark.daemon
@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_damaged_history_is_moved_aside_at_start(labd_factory, where: str) -> None:
    state, highest = _a_history()
    db = state / FILENAME
    damage(db, where)
    damaged = db.read_bytes()
    d = labd_factory(state_dir=state)
    conn = d.connect()
    try:
        warnings = version(conn)["warnings"]
        assert len(warnings) == 1 and "damaged" in warnings[0] and "moved aside" in warnings[0]
        (aside,) = _moved_aside(state, "damaged")
        assert aside.read_bytes() == damaged, "the damaged file is kept as it was"
        assert aside.name in warnings[0]
        assert len(re.findall("moved aside", d.log_text())) == 1
        assert "moved aside" in labctl_status(d.socket).stderr
        new = json.loads(conn.root.spawn("queue", 1, "{}"))
        assert new["id"] == highest + 1, "ids go on above those of the damaged file"
    finally:
        conn.close()


@pytest.mark.daemon
def test_a_read_only_history_is_moved_aside_at_start(labd_factory) -> None:
    if os.geteuid() != 0:
        pytest.skip("run as root: labd then runs without the capability to override modes")
    state = short_dir() / "state"
    state.mkdir(mode=0o700)
    conn = sqlite3.connect(state / FILENAME)  # an old history: sets 1 to 5
    conn.executescript(
        "CREATE TABLE sets (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);"
        "INSERT INTO sets (name) VALUES ('a'), ('b'), ('c'), ('d'), ('e');"
    )
    conn.close()
    os.chmod(state / FILENAME, 0o444)
    d = labd_factory(state_dir=state, wrapper=ROOT_WITHOUT_OVERRIDE)
    conn = d.connect()
    try:
        (warning,) = version(conn)["warnings"]
        assert "read-only" in warning and "moved aside" in warning, warning
        (aside,) = _moved_aside(state, "readonly")
        assert stored(aside, "SELECT COUNT(*) FROM sets") == [(5,)], "kept as it was"
        assert json.loads(conn.root.spawn("queue", 1, "{}"))["id"] == 6
    finally:
        conn.close()


@pytest.mark.daemon
def test_set_ids_are_never_reused_when_the_history_is_deleted(labd_factory) -> None:
    d = labd_factory()
    db = d.state_dir / FILENAME
    conn = d.connect()
    try:
        first = [json.loads(conn.root.spawn("queue", 1, "{}"))["id"] for _ in range(2)]
        conn.root.stop("all")
        for side in ("", "-wal", "-shm"):  # deleted while labd runs
            Path(f"{db}{side}").unlink(missing_ok=True)
        third = json.loads(conn.root.spawn("queue", 1, "{}"))["id"]
        assert third == max(first) + 1
        wait_for(
            lambda: db.exists() and "deleted" in " ".join(version(conn)["warnings"]),
            10,
            "labd to write its history back",
        )
        conn.root.stop("all")
        wait_for(
            lambda: [r[0] for r in stored(db, "SELECT id FROM sets")] == [*first, third],
            10,
            "every set in the history written back",
        )
    finally:
        conn.close()
    assert d.stop() == 0
    for side in ("", "-wal", "-shm"):  # and deleted while labd is down
        Path(f"{db}{side}").unlink(missing_ok=True)
    again = labd_factory(state_dir=d.state_dir)
    conn = again.connect()
    try:
        assert json.loads(conn.root.spawn("queue", 1, "{}"))["id"] == third + 1
    finally:
        conn.close()


@pytest.mark.daemon
def test_a_large_damaged_history_is_checked_after_start(labd_factory) -> None:
    """A file too large to read through before labd answers is checked once it runs:
    the damage is reported at once, and the file moved aside at the next start."""
    state = short_dir() / "state"
    state.mkdir(mode=0o700)
    db = state / FILENAME
    store = Store(db)
    for _ in range(3):
        store.new_set("queue", "", 1, 1, {})
    store.add_samples([(2, float(t), 1, 1, 0, 0, 0, 1.0, None, None) for t in range(500)])
    store.close()
    conn = sqlite3.connect(db)  # and 70 MiB more, beyond what is checked at open
    conn.executescript(f"CREATE TABLE pad (b BLOB); INSERT INTO pad VALUES (zeroblob({70 << 20}));")
    conn.close()
    assert db.stat().st_size > CHECK_AT_OPEN
    damage(db, "middle")
    d = labd_factory(state_dir=state)
    conn = d.connect()
    try:
        warning = wait_for(
            lambda: " ".join(version(conn)["warnings"]), 30, "the damage to be reported"
        )
        assert "damaged" in warning and "moved aside when labd next starts" in warning
        assert "moved aside when labd next starts" in labctl_status(d.socket).stderr
    finally:
        conn.close()
    assert d.stop() == 0
    again = labd_factory(state_dir=state)
    conn = again.connect()
    try:
        assert "moved aside to" in " ".join(version(conn)["warnings"])
        assert len(_moved_aside(state, "damaged")) == 1
        assert json.loads(conn.root.spawn("queue", 1, "{}"))["id"] == 4
    finally:
        conn.close()
