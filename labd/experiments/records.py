"""Experiments in the history store: two tables beside the sets', in the same file.

::

    experiments      one row per experiment: state, times, spec, plan, machine, error,
                     owner (who asked: their sets' owner, who alone may cancel it)
    experiment_runs  one row per run: its grid point and repeat, its set, its result

The tables are created if missing, on a connection of their own (SQLite in WAL mode
serves both connections), so the sets' store is left as it is.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from labd.errors import ConfigError

STATES = ("queued", "running", "done", "cancelled", "failed", "interrupted")
LIVE = ("queued", "running")
INTERRUPTED_DETAIL = "labd stopped while it ran"

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

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(path, check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.executescript(_SCHEMA)
            _add_owner(self._conn)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"cannot open the experiments in {path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def new(
        self,
        spec: dict[str, Any],
        plan: dict[str, Any],
        machine: dict[str, Any],
        owner: str | None = None,
    ) -> int:
        with self._lock, self._conn:
            cur = self._conn.execute(
                "INSERT INTO experiments (state, created_at, spec_json, plan_json, machine_json,"
                " owner) VALUES ('queued', ?, ?, ?, ?, ?)",
                (time.time(), json.dumps(spec), json.dumps(plan), json.dumps(machine), owner),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def set_state(self, exp_id: int, state: str, error: str | None = None) -> None:
        assert state in STATES, state
        now = time.time()
        started = now if state == "running" else None
        finished = now if state not in LIVE else None
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE experiments SET state = ?, started_at = COALESCE(started_at, ?),"
                " finished_at = COALESCE(finished_at, ?), error = COALESCE(?, error)"
                " WHERE id = ?",
                (state, started, finished, error, exp_id),
            )

    def set_machine(self, exp_id: int, machine: dict[str, Any]) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE experiments SET machine_json = ? WHERE id = ?",
                (json.dumps(machine), exp_id),
            )

    def run_started(self, exp_id: int, seq: int, point: int, repeat: int) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO experiment_runs (experiment_id, seq, point, repeat,"
                " state, started_at) VALUES (?, ?, ?, ?, 'running', ?)",
                (exp_id, seq, point, repeat, time.time()),
            )

    def run_set(self, exp_id: int, seq: int, set_id: int) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE experiment_runs SET set_id = ? WHERE experiment_id = ? AND seq = ?",
                (set_id, exp_id, seq),
            )

    def run_ended(
        self, exp_id: int, seq: int, state: str, result: dict[str, Any] | None, error: str = ""
    ) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "UPDATE experiment_runs SET state = ?, finished_at = ?, result_json = ?,"
                " error = ? WHERE experiment_id = ? AND seq = ?",
                (state, time.time(), json.dumps(result) if result else None, error, exp_id, seq),
            )

    def mark_interrupted(self) -> list[int]:
        """Experiments (and runs) left queued or running by a labd that stopped."""
        now = time.time()
        with self._lock, self._conn:
            ids = [
                int(r[0])
                for r in self._conn.execute(
                    "SELECT id FROM experiments WHERE state IN ('queued', 'running')"
                ).fetchall()
            ]
            for exp_id in ids:
                self._conn.execute(
                    "UPDATE experiments SET state = 'interrupted', finished_at = ?,"
                    " error = COALESCE(error, ?) WHERE id = ?",
                    (now, INTERRUPTED_DETAIL, exp_id),
                )
                self._conn.execute(
                    "UPDATE experiment_runs SET state = 'interrupted', finished_at = ?"
                    " WHERE experiment_id = ? AND state = 'running'",
                    (now, exp_id),
                )
        return ids

    def get(self, exp_id: int) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM experiments WHERE id = ?", (exp_id,)
            ).fetchone()
            if row is None:
                return None
            runs = self._conn.execute(
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

    def ids(self, limit: int) -> list[int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id FROM experiments ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [int(r[0]) for r in rows]


def _add_owner(conn: sqlite3.Connection) -> None:
    """A store of an older labd gains the owner column (its experiments have none)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(experiments)")}
    if "owner" not in columns:
        with conn:
            conn.execute("ALTER TABLE experiments ADD COLUMN owner TEXT")


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
