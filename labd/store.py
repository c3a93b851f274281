"""The history store: every set labd ever ran, its state changes and its time series.

One SQLite file, ``STATE_DIR/history.sqlite3``, in WAL mode with ``synchronous=NORMAL``
(a power loss may drop the last commits, never corrupt the file). One connection guarded
by one lock serves every thread of the daemon. Tables::

    sets     one row per set; AUTOINCREMENT, so an id is never reused, not after a
             delete and not across restarts (and labd.idmark, not with a new file);
             ``owner``, who spawned it (added to a store of an older labd at open)
    events   (set_id, at, state, detail): every state the set entered, listed in
             the order written (``at`` is the wall clock, which may step back)
    samples  (set_id, at, value, attempted, lost, in_flight, corrupt, rate,
             latency_p50_us, latency_p99_us): the once-a-second time series

Retention bounds the samples table: each set keeps its newest ``keep_per_set`` samples
(86400, a day at one a second; trimmed by :meth:`Store.add_samples` once a set has
outgrown it by an eighth), and only the newest ``keep_sets`` sets keep samples at all
(trimmed by :meth:`Store.new_set`). Sets and events stay, so a set's final status is
always there to inspect. :meth:`Store.prune` applies both limits to every set at once.

Timestamps are unix time floats, given by the caller or taken from ``time.time()``.
Opening and checking the file: :mod:`labd.storefile`; riding out faults:
:mod:`labd.history`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar

from labd.errors import NoSuchSet
from labd.protocol import (
    FIGURE_KEYS,
    FINISHED_STATES,
    LIVE_STATES,
    STATES,
    EventRecord,
    ParamValue,
    State,
    StatusRecord,
)
from labd.storefile import SCHEMA_VERSION, open_db, quick_check

BUSY_TIMEOUT = 2.0  # seconds a write waits for another process's lock, then fails
#: files up to this size are checked page by page when opened (about 1 s per 40 MiB
#: here); larger ones after labd started (:meth:`Store.check`), so that it starts in time
CHECK_AT_OPEN = 64 << 20
FILENAME = "history.sqlite3"
INTERRUPTED_DETAIL = "labd stopped while it ran"
SAMPLE_KEYS = ("at", *FIGURE_KEYS)
T = TypeVar("T")


class SetRow(TypedDict):
    """A set as the store keeps it (``params`` and ``final`` decoded)."""

    id: int
    name: str
    mechanism: str
    counters: int
    printers: int
    params: dict[str, ParamValue]
    state: str
    created_at: float
    started_at: float | None
    stopped_at: float | None
    final: StatusRecord | None  # the status it ended with, as inspect showed it
    error: str | None
    owner: str | None  # who spawned it (labd.owners); None in a store of labd 0.1.0
    events: NotRequired[list[EventRecord]]  # from get(), not from history()


_SET_COLUMNS = (
    "id, name, mechanism, counters, printers, params_json, state, "
    "created_at, started_at, stopped_at, final_json, error, owner"
)


class Store:
    """The SQLite history of process sets; safe to call from any thread."""

    def __init__(
        self,
        path: Path,
        *,
        keep_per_set: int = 86400,
        keep_sets: int = 500,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        if keep_per_set < 1 or keep_sets < 1:
            raise ValueError("keep_per_set and keep_sets must be at least 1")
        self.path = path
        self.keep_per_set = keep_per_set
        self.keep_sets = keep_sets
        self._lock = threading.Lock()
        self._unpruned: dict[int, int] = {}
        self._busy = busy_timeout
        #: checked page by page at open; if not, the caller runs check() later
        self.checked = not path.exists() or path.stat().st_size <= CHECK_AT_OPEN
        self._conn = open_db(path, busy_timeout, check=self.checked)
        self.inode = os.stat(path).st_ino  # to notice the file deleted or replaced

    # -- sets and their states ------------------------------------------------------

    def new_set(
        self,
        mechanism: str,
        name: str,
        counters: int,
        printers: int,
        params: Mapping[str, ParamValue],
        *,
        at: float | None = None,
        set_id: int | None = None,
        owner: str | None = None,
    ) -> int:
        """Record a new set in state ``starting`` and return its id (never reused): the
        next AUTOINCREMENT one, or ``set_id`` (above every id given before)."""
        now = time.time() if at is None else at
        with self._lock, self._conn:
            cur = self._conn.execute(
                "INSERT INTO sets (id, name, mechanism, counters, printers, params_json, state,"
                " created_at, owner) VALUES (?, ?, ?, ?, ?, ?, 'starting', ?, ?)",
                (set_id, name, mechanism, counters, printers, json.dumps(params), now, owner),
            )
            set_id = cur.lastrowid
            assert set_id is not None
            self._conn.execute(
                "INSERT INTO events (set_id, at, state, detail) VALUES (?, ?, 'starting', '')",
                (set_id, now),
            )
            self._drop_old_samples(self.keep_sets)
        return set_id

    def set_state(self, set_id: int, state: str, detail: str = "", at: float | None = None) -> None:
        """Move a set to ``state`` and append an event.

        Entering ``running`` the first time sets ``started_at``; entering a finished state
        (stopped, failed, interrupted) sets ``stopped_at``; ``failed`` keeps ``detail`` as
        the set's error text.
        """
        if state not in STATES:
            raise ValueError(f"unknown set state {state!r} (one of {', '.join(STATES)})")
        now = time.time() if at is None else at
        started = now if state == State.RUNNING else None
        stopped = now if state in FINISHED_STATES else None
        error = detail if state == State.FAILED else None
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE sets SET state = ?, started_at = COALESCE(started_at, ?),"
                " stopped_at = COALESCE(stopped_at, ?), error = COALESCE(?, error)"
                " WHERE id = ?",
                (state, started, stopped, error, set_id),
            )
            if cur.rowcount == 0:
                raise NoSuchSet(f"no set {set_id} in the history store")
            self._conn.execute(
                "INSERT INTO events (set_id, at, state, detail) VALUES (?, ?, ?, ?)",
                (set_id, now, state, detail),
            )

    def finish(self, set_id: int, final: StatusRecord) -> None:
        """Keep the set's final status object (with its processes, for ``inspect``)."""
        with self._lock, self._conn:
            cur = self._conn.execute(
                "UPDATE sets SET final_json = ? WHERE id = ?", (json.dumps(final), set_id)
            )
            if cur.rowcount == 0:
                raise NoSuchSet(f"no set {set_id} in the history store")

    def mark_interrupted(self, at: float | None = None) -> list[int]:
        """Mark every set still recorded as live ``interrupted``; return their ids.

        labd calls this at start-up: such sets ran when the previous daemon died.
        """
        now = time.time() if at is None else at
        marks = ", ".join("?" for _ in LIVE_STATES)
        with self._lock, self._conn:
            rows = self._conn.execute(
                f"SELECT id FROM sets WHERE state IN ({marks}) ORDER BY id", LIVE_STATES
            ).fetchall()
            ids = [int(row[0]) for row in rows]
            self._conn.executemany(
                "UPDATE sets SET state = 'interrupted', stopped_at = COALESCE(stopped_at, ?)"
                " WHERE id = ?",
                [(now, set_id) for set_id in ids],
            )
            self._conn.executemany(
                "INSERT INTO events (set_id, at, state, detail) VALUES (?, ?, 'interrupted', ?)",
                [(set_id, now, INTERRUPTED_DETAIL) for set_id in ids],
            )
        return ids

    # -- reading --------------------------------------------------------------------

    def max_id(self) -> int:
        """The highest set id this file ever gave (0 for none)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MAX(n) FROM (SELECT seq AS n FROM sqlite_sequence WHERE name = 'sets'"
                " UNION ALL SELECT MAX(id) FROM sets)"
            ).fetchone()
        return int(row[0] or 0)

    def check(self) -> None:
        """Read every page (``PRAGMA quick_check``): damage in a middle page shows only
        when read. Raises :class:`StoreDamaged` naming the first problems. It reads on
        a connection of its own, so writers go on meanwhile (WAL)."""
        reader = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            quick_check(reader, self.path)
        finally:
            reader.close()

    def probe(self) -> None:
        """A small real write: raises the error the next write would meet, if any."""
        with self._lock, self._conn:
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def get(self, set_id: int) -> SetRow | None:
        """The set's row (``params`` and ``final`` decoded) with its ``events``, or None."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_SET_COLUMNS} FROM sets WHERE id = ?", (set_id,)
            ).fetchone()
            if row is None:
                return None
            events = self._conn.execute(
                "SELECT state, at, detail FROM events WHERE set_id = ? ORDER BY rowid",
                (set_id,),
            ).fetchall()
        record = _set_record(row)
        record["events"] = [{"state": s, "at": a, "detail": d} for s, a, d in events]
        return record

    def history(self, limit: int = 20, mechanism: str | None = None) -> list[SetRow]:
        """Finished sets (stopped, failed, interrupted), newest first, without events;
        with ``mechanism``, only that mechanism's."""
        marks = ", ".join("?" for _ in FINISHED_STATES)
        which = "" if mechanism is None else " AND mechanism = ?"
        args = (*FINISHED_STATES, *(() if mechanism is None else (mechanism,)), limit)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_SET_COLUMNS} FROM sets WHERE state IN ({marks}){which}"
                " ORDER BY id DESC LIMIT ?",
                args,
            ).fetchall()
        return [_set_record(row) for row in rows]

    def samples(self, set_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        """A set's samples, oldest first; with ``limit``, only the newest ``limit``."""
        query = f"SELECT {', '.join(SAMPLE_KEYS)} FROM samples WHERE set_id = ?"
        with self._lock:
            if limit is None:
                rows = self._conn.execute(f"{query} ORDER BY at, rowid", (set_id,)).fetchall()
            else:
                rows = self._conn.execute(
                    f"{query} ORDER BY at DESC, rowid DESC LIMIT ?", (set_id, limit)
                ).fetchall()
                rows.reverse()
        return [dict(zip(SAMPLE_KEYS, row, strict=True)) for row in rows]

    # -- processes, so a later daemon can end what a dead one left ----------------------

    def add_workers(self, set_id: int, rows: Sequence[tuple[int, float]]) -> None:
        """Record a set's worker processes: (pid, creation time) each."""
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT INTO workers (set_id, pid, created) VALUES (?, ?, ?)",
                [(set_id, pid, created) for pid, created in rows],
            )

    def workers(self, set_ids: Sequence[int]) -> list[tuple[int, int, float]]:
        """(set id, pid, creation time) of the recorded workers of these sets."""
        marks = ", ".join("?" for _ in set_ids)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT set_id, pid, created FROM workers WHERE set_id IN ({marks})",
                tuple(set_ids),
            ).fetchall()
        return [(int(a), int(b), float(c)) for a, b, c in rows]

    def forget_workers(self, set_id: int) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM workers WHERE set_id = ?", (set_id,))

    # -- time series and retention --------------------------------------------------

    def add_samples(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert samples: (set_id, at, value, attempted, lost, in_flight, corrupt, rate,
        p50, p99) each; a set that outgrew its retention by an eighth is trimmed."""
        if not rows:
            return
        slack = max(1, self.keep_per_set // 8)
        with self._lock, self._conn:
            self._conn.executemany(
                f"INSERT INTO samples (set_id, {', '.join(SAMPLE_KEYS)})"
                f" VALUES ({', '.join('?' * (len(SAMPLE_KEYS) + 1))})",
                rows,
            )
            for row in rows:
                self._unpruned[row[0]] = self._unpruned.get(row[0], 0) + 1
            due = [sid for sid, n in self._unpruned.items() if n >= slack]
            self._trim(due, self.keep_per_set)

    def prune(self, keep_per_set: int | None = None, keep_sets: int | None = None) -> int:
        """Apply retention to every set now; return how many samples were deleted."""
        per_set = self.keep_per_set if keep_per_set is None else keep_per_set
        sets = self.keep_sets if keep_sets is None else keep_sets
        with self._lock, self._conn:
            before = self._conn.total_changes
            self._drop_old_samples(sets)
            ids = self._conn.execute("SELECT DISTINCT set_id FROM samples").fetchall()
            self._trim([int(row[0]) for row in ids], per_set)
            return self._conn.total_changes - before

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def transact(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the store's connection in one transaction, under its lock: for
        tables kept in the same file by others (the experiments'), so that they share
        its fault handling (:mod:`labd.history`) and follow it when it is restored."""
        with self._lock, self._conn:
            return fn(self._conn)

    def restore(self) -> None:
        """The file was deleted or replaced: write what this connection still holds
        (the old file stays readable through it) to ``path`` again, and go on there."""
        with self._lock:
            fresh = sqlite3.connect(self.path)
            try:
                self._conn.backup(fresh)
            finally:
                fresh.close()
            old, self._conn = self._conn, open_db(self.path, self._busy, check=False)
            old.close()
            self.inode = os.stat(self.path).st_ino

    def _trim(self, set_ids: Iterable[int], keep: int) -> None:
        """Delete all but the newest ``keep`` samples of each set (lock held)."""
        for set_id in list(set_ids):
            self._conn.execute(
                "DELETE FROM samples WHERE rowid IN (SELECT rowid FROM samples WHERE set_id = ?"
                " ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (set_id, keep),
            )
            self._unpruned.pop(set_id, None)

    def _drop_old_samples(self, keep_sets: int) -> None:
        """Delete the samples of all but the newest ``keep_sets`` sets (lock held)."""
        row = self._conn.execute(
            "SELECT id FROM sets ORDER BY id DESC LIMIT 1 OFFSET ?", (keep_sets,)
        ).fetchone()
        if row is not None:
            self._conn.execute("DELETE FROM samples WHERE set_id <= ?", (row[0],))


def _set_record(row: tuple[Any, ...]) -> SetRow:
    (set_id, name, mechanism, counters, printers, params_json, state) = row[:7]
    (created_at, started_at, stopped_at, final_json, error, owner) = row[7:]
    return {
        "id": set_id,
        "name": name,
        "mechanism": mechanism,
        "counters": counters,
        "printers": printers,
        "params": json.loads(params_json),
        "state": state,
        "created_at": created_at,
        "started_at": started_at,
        "stopped_at": stopped_at,
        "final": None if final_json is None else json.loads(final_json),
        "error": error,
        "owner": owner,
    }
