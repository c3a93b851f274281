"""Experiments under real storage faults, with a real labd: a full disk (a small tmpfs
filled by the test) or a disk failing with EIO (a FUSE filesystem) while an experiment
runs, and a damaged experiments table at start. The experiment survives, its results
wait in memory, a new compare is refused with the history's reason, and everything is
written once the fault clears; a damaged file is moved aside and no id is given twice.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import rpyc
from diskfaults import DiskFault
from helpers import one_line, wait_for

from labd.errors import LabError
from labd.store import FILENAME

pytestmark = pytest.mark.daemon
#: six short runs of one case (each about 0.4 s of a flat-out set)
SPEC = {"cases": ["shared"], "seconds": 0.3, "warmup": 0.1, "repeat": 6}


def experiment(conn: rpyc.Connection, exp_id: int) -> dict[str, Any]:
    return json.loads(conn.root.experiment(exp_id))  # type: ignore[no-any-return]


def done(e: dict[str, Any]) -> int:
    return sum(1 for r in e["runs"] if r["state"] == "done")


def in_file(db: Path, exp_id: int) -> tuple[str, int]:
    """The experiment's state and how many of its runs have a result, as the file says
    (read only, as another program would)."""
    conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        (state,) = conn.execute("SELECT state FROM experiments WHERE id = ?", (exp_id,)).fetchone()
        (runs,) = conn.execute(
            "SELECT COUNT(*) FROM experiment_runs WHERE experiment_id = ?"
            " AND result_json IS NOT NULL",
            (exp_id,),
        ).fetchone()
        return str(state), int(runs)
    finally:
        conn.close()


def test_a_failing_disk_pauses_an_experiment_then_it_goes_on(
    disk_fault: DiskFault, labd_factory
) -> None:
    kind = disk_fault.kind
    d = labd_factory(state_dir=disk_fault.path / "state")
    db = d.state_dir / FILENAME
    conn = d.connect()
    try:
        exp_id = json.loads(conn.root.compare(json.dumps(SPEC)))["id"]
        wait_for(lambda: done(experiment(conn, exp_id)) >= 1, 30, "a first run to end")
        disk_fault.on()
        wait_for(
            lambda: json.loads(conn.root.version())["history"]["state"] == "degraded",
            20,
            f"the history to report {kind}",
        )
        with pytest.raises(LabError) as refused:
            conn.root.compare(json.dumps(SPEC))
        assert f"history store is degraded: {kind}" in one_line(refused.value)
        wait_for(
            lambda: (
                f"experiment {exp_id} waits: the history store is degraded ({kind}" in d.log_text()
            ),
            20,
            "the experiment to wait for the store",
        )
        during = experiment(conn, exp_id)
        assert during["state"] == "running" and done(during) >= 1
        assert json.loads(conn.root.version())["history"]["pending"] > 0
        if disk_fault.eio is None:  # (a reader through FUSE would drop labd's cached pages)
            assert done(during) > in_file(db, exp_id)[1], "a run ended during the fault is kept"

        disk_fault.off()
        wait_for(lambda: experiment(conn, exp_id)["state"] != "running", 60, "the experiment")
        e = experiment(conn, exp_id)
        assert e["state"] == "done" and done(e) == 6, e["error"]
        assert [r["set_id"] for r in e["runs"]] == sorted({r["set_id"] for r in e["runs"]})
        wait_for(lambda: in_file(db, exp_id) == ("done", 6), 15, "every run in the file")
        assert "history store recovered" in d.log_text()
        assert "Traceback" not in d.log_text()
        assert json.loads(conn.root.compare(json.dumps(SPEC)))["id"] == exp_id + 1
    finally:
        conn.close()


def damage_table(db: Path, table: str) -> None:
    """Overwrite the first page of ``table`` with garbage."""
    conn = sqlite3.connect(db)
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    data[(root - 1) * page : root * page] = bytes(range(256)) * (page // 256)
    db.write_bytes(bytes(data))


def test_a_damaged_experiments_table_is_moved_aside_at_start(labd_factory) -> None:
    d = labd_factory()
    conn = d.connect()
    try:
        spec = json.dumps({**SPEC, "repeat": 1})
        first = json.loads(conn.root.compare(spec))["id"]
        wait_for(lambda: experiment(conn, first)["state"] == "done", 30, "the experiment")
    finally:
        conn.close()
    assert d.stop() == 0
    db = d.state_dir / FILENAME
    damage_table(db, "experiments")
    damaged = db.read_bytes()
    again = labd_factory(state_dir=d.state_dir)
    conn = again.connect()
    try:
        (warning,) = json.loads(conn.root.version())["warnings"]
        assert "damaged" in warning and "moved aside" in warning, warning
        (aside,) = d.state_dir.glob(f"{FILENAME}.damaged-*[0-9]Z")
        assert aside.read_bytes() == damaged, "the damaged file is kept as it was"
        assert json.loads(conn.root.experiments(10)) == []
        new = json.loads(conn.root.compare(spec))["id"]
        assert new == first + 1, "experiment ids go on above those of the damaged file"
        assert "Traceback" not in again.log_text()
    finally:
        conn.close()
