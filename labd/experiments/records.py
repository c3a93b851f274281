"""Experiments in the history store: two tables beside the sets', in the same file.

::

    experiments      one row per experiment: state, times, spec, plan, machine, error,
                     owner (who asked: their sets' owner, who alone may cancel it)
    experiment_runs  one row per run: its grid point and repeat, its set, its result

They are written through the history's guard (:class:`labd.history.History`) on the
store's own connection, so storage faults are met as the sets' are: a new experiment
is refused while the history is degraded (with its reason); a write that fails waits
in memory, in order and with the time it happened, and is made once the fault clears.
Meanwhile the experiments of this labd are read from memory (:attr:`Records._live`,
kept until their last write is made), so a running one shows every finished run.
Experiment ids are never given twice, also when a damaged file was moved aside at start
(a high-water mark of their own, ``STATE_DIR/last-experiment-id``: :mod:`labd.idmark`).
"""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
import time
from typing import Any

from labd.errors import ConfigError
from labd.history import History
from labd.idmark import IdMark

STATES = ("queued", "running", "done", "cancelled", "failed", "interrupted")
LIVE = ("queued", "running")
INTERRUPTED_DETAIL = "labd stopped while it ran"
ID_FILENAME = "last-experiment-id"  # the experiment ids' high-water mark (labd.idmark)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    spec_json TEXT NOT NULL,
    plan_json TEXT NOT NULL,
    machine_json TEXT NOT NULL,
    error TEXT,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS experiment_runs (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    point INTEGER NOT NULL,
    repeat INTEGER NOT NULL,
    set_id INTEGER,
    state TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    result_json TEXT,
    error TEXT,
    PRIMARY KEY (experiment_id, seq)
);
"""
_COLUMNS = (
    "id, state, created_at, started_at, finished_at, spec_json, plan_json, machine_json, error,"
    " owner"
)


class Records:
    """Experiments and their runs; safe to call from any thread."""

    def __init__(self, history: History) -> None:
        self._history = history
        #: experiment ids are never given twice, also when the file is moved aside
        self._mark = IdMark(history.path.parent / ID_FILENAME)
        self._mark.raise_to(history.ids_aside.get("experiments", 0))
        self._lock = threading.Lock()
        #: experiments of this labd whose last writes may still wait, as they are now
        self._live: dict[int, dict[str, Any]] = {}
        try:
            history.store.transact(_create_tables)
        except sqlite3.Error as exc:
            where = history.path
            raise ConfigError(f"cannot open the experiments in {where}: {exc}") from None

    def close(self) -> None:
        """The store itself is closed by its owner (the Lab)."""

    # --- writes: memory first, then the file (now, or once the fault clears) ---------
    def new(
        self,
        spec: dict[str, Any],
        plan: dict[str, Any],
        machine: dict[str, Any],
        owner: str | None = None,
    ) -> int:
        """Record a new experiment (queued) asked for by ``owner``; refused while the
        history is degraded."""
        now = time.time()
        texts = (now, json.dumps(spec), json.dumps(plan), json.dumps(machine), owner)

        def insert(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT MAX(n) FROM (SELECT seq AS n FROM sqlite_sequence WHERE name ="
                " 'experiments' UNION ALL SELECT MAX(id) FROM experiments)"
            ).fetchone()
            exp_id = self._mark.take(int(row[0] or 0))
            conn.execute(
                "INSERT INTO experiments (id, state, created_at, spec_json, plan_json,"
                " machine_json, owner) VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                (exp_id, *texts),
            )
            return exp_id

        exp_id = self._history.new_record(lambda: self._history.store.transact(insert))
        record = {
            "id": exp_id,
            "state": "queued",
            "created_at": now,
            "started_at": None,
            "finished_at": None,
            "spec": copy.deepcopy(spec),
            "plan": copy.deepcopy(plan),
            "machine": copy.deepcopy(machine),
            "error": None,
            "owner": owner,
            "runs": [],
        }
        with self._lock:
            self._live[exp_id] = record
        return exp_id

    def set_state(self, exp_id: int, state: str, error: str | None = None) -> None:
        assert state in STATES, state
        now = time.time()
        started = now if state == "running" else None
        finished = now if state not in LIVE else None
        with self._lock:
            rec = self._live.get(exp_id)
            if rec is not None:
                rec["state"] = state
                rec["started_at"] = rec["started_at"] or started
                rec["finished_at"] = rec["finished_at"] or finished
                rec["error"] = error if error is not None else rec["error"]
        self._write(
            exp_id,
            "UPDATE experiments SET state = ?, started_at = COALESCE(started_at, ?),"
            " finished_at = COALESCE(finished_at, ?), error = COALESCE(?, error)"
            " WHERE id = ?",
            (state, started, finished, error, exp_id),
            last=state not in LIVE,
        )

    def set_machine(self, exp_id: int, machine: dict[str, Any]) -> None:
        with self._lock:
            if exp_id in self._live:
                self._live[exp_id]["machine"] = copy.deepcopy(machine)
        self._write(
            exp_id,
            "UPDATE experiments SET machine_json = ? WHERE id = ?",
            (json.dumps(machine), exp_id),
        )

    def run_started(self, exp_id: int, seq: int, point: int, repeat: int) -> None:
        now = time.time()
        run: dict[str, Any] = {"seq": seq, "point": point, "repeat": repeat, "set_id": None}
        run.update(state="running", started_at=now, finished_at=None, result=None, error=None)
        self._update_run(exp_id, seq, run, replace=True)
        self._write(
            exp_id,
            "INSERT OR REPLACE INTO experiment_runs (experiment_id, seq, point, repeat,"
            " state, started_at) VALUES (?, ?, ?, ?, 'running', ?)",
            (exp_id, seq, point, repeat, now),
        )

    def run_set(self, exp_id: int, seq: int, set_id: int) -> None:
        self._update_run(exp_id, seq, {"set_id": set_id})
        self._write(
            exp_id,
            "UPDATE experiment_runs SET set_id = ? WHERE experiment_id = ? AND seq = ?",
            (set_id, exp_id, seq),
        )

    def run_ended(
        self, exp_id: int, seq: int, state: str, result: dict[str, Any] | None, error: str = ""
    ) -> None:
        now = time.time()
        kept = copy.deepcopy(result) if result else None
        ended = {"state": state, "finished_at": now, "result": kept, "error": error or None}
        self._update_run(exp_id, seq, ended)
        self._write(
            exp_id,
            "UPDATE experiment_runs SET state = ?, finished_at = ?, result_json = ?,"
            " error = ? WHERE experiment_id = ? AND seq = ?",
            (state, now, json.dumps(result) if result else None, error, exp_id, seq),
        )

    def _update_run(
        self, exp_id: int, seq: int, fields: dict[str, Any], replace: bool = False
    ) -> None:
        with self._lock:
            rec = self._live.get(exp_id)
            if rec is None:
                return
            runs: list[dict[str, Any]] = rec["runs"]
            found = [r for r in runs if r["seq"] == seq]
            if found and not replace:
                found[0].update(fields)
            elif replace:
                runs[:] = sorted([r for r in runs if r["seq"] != seq] + [fields], key=_seq)

    def _write(self, exp_id: int, sql: str, args: tuple[Any, ...], last: bool = False) -> None:
        """One statement through the history's guard; the experiment's last write lets
        go of its copy in memory once it is made (every write before it is, by then)."""

        def made(conn: sqlite3.Connection) -> None:
            conn.execute(sql, args)

        def write() -> None:
            self._history.store.transact(made)
            if last:
                with self._lock:
                    self._live.pop(exp_id, None)

        self._history.write(write)

    def mark_interrupted(self) -> list[int]:
        """Experiments (and runs) left queued or running by a labd that stopped."""
        now = time.time()
        ids: list[int] = self._history.read(
            self._history.store.transact, lambda conn: _interrupt(conn, now)
        )
        return ids

    # --- reads -------------------------------------------------------------------------
    def get(self, exp_id: int) -> dict[str, Any] | None:
        with self._lock:
            if exp_id in self._live:
                return copy.deepcopy(self._live[exp_id])
        found: dict[str, Any] | None = self._history.read(
            self._history.store.transact, lambda conn: _get(conn, exp_id)
        )
        return found

    def ids(self, limit: int) -> list[int]:
        def newest(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT id FROM experiments ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [int(r[0]) for r in rows]

        found: list[int] = self._history.read(self._history.store.transact, newest)
        return found


def _seq(run: dict[str, Any]) -> int:
    return int(run["seq"])


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    # a store of an older labd gains the owner column (its experiments have none)
    if "owner" not in {r[1] for r in conn.execute("PRAGMA table_info(experiments)")}:
        conn.execute("ALTER TABLE experiments ADD COLUMN owner TEXT")


def _interrupt(conn: sqlite3.Connection, now: float) -> list[int]:
    rows = conn.execute("SELECT id FROM experiments WHERE state IN ('queued', 'running')")
    ids = [int(r[0]) for r in rows.fetchall()]
    for exp_id in ids:
        conn.execute(
            "UPDATE experiments SET state = 'interrupted', finished_at = ?,"
            " error = COALESCE(error, ?) WHERE id = ?",
            (now, INTERRUPTED_DETAIL, exp_id),
        )
        conn.execute(
            "UPDATE experiment_runs SET state = 'interrupted', finished_at = ?"
            " WHERE experiment_id = ? AND state = 'running'",
            (now, exp_id),
        )
    return ids


def _get(conn: sqlite3.Connection, exp_id: int) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM experiments WHERE id = ?", (exp_id,)).fetchone()
    if row is None:
        return None
    runs = conn.execute(
        "SELECT seq, point, repeat, set_id, state, started_at, finished_at,"
        " result_json, error FROM experiment_runs WHERE experiment_id = ? ORDER BY seq",
        (exp_id,),
    ).fetchall()
    record = _record(row)
    record["runs"] = [
        {
            "seq": seq,
            "point": point,
            "repeat": repeat,
            "set_id": set_id,
            "state": state,
            "started_at": started,
            "finished_at": finished,
            "result": json.loads(result) if result else None,
            "error": error or None,
        }
        for seq, point, repeat, set_id, state, started, finished, result, error in runs
    ]
    return record


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    exp_id, state, created, started, finished, spec, plan, machine, error, owner = row
    return {
        "id": exp_id,
        "state": state,
        "created_at": created,
        "started_at": started,
        "finished_at": finished,
        "spec": json.loads(spec),
        "plan": json.loads(plan),
        "machine": json.loads(machine),
        "error": error,
        "owner": owner,
    }
