"""The history file itself: its schema, and opening it checked (stdlib only).

Opening creates the file (mode 0600, in a 0700 directory), sets WAL mode, migrates the
schema, reads every page when asked (``PRAGMA quick_check``: damage in a middle page
shows only when that page is read) and makes one small write, so that a file labd
cannot write shows at once. What cannot be used raises :class:`StoreDamaged` (the
caller moves the file aside); a transient fault or a newer schema, :class:`ConfigError`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from labd.errors import ConfigError, StoreDamaged

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    counters INTEGER NOT NULL,
    printers INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    stopped_at REAL,
    final_json TEXT,
    error TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS sets_by_state ON sets(state);
CREATE TABLE IF NOT EXISTS events (
    set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_set ON events(set_id, at);
CREATE TABLE IF NOT EXISTS samples (
    set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    at REAL NOT NULL,
    value INTEGER,
    attempted INTEGER,
    lost INTEGER,
    in_flight INTEGER,
    corrupt INTEGER,
    rate REAL,
    latency_p50_us REAL,
    latency_p99_us REAL
);
CREATE INDEX IF NOT EXISTS samples_by_set ON samples(set_id, at);
CREATE TABLE IF NOT EXISTS workers (
    set_id INTEGER NOT NULL REFERENCES sets(id) ON DELETE CASCADE,
    pid INTEGER NOT NULL,
    created REAL NOT NULL
);
"""
#: columns added since schema 1, each with its type: an older store gains them at open
#: (additive only, so that an older labd can still read the file)
_ADDED_COLUMNS = (("sets", "owner", "TEXT"),)


def open_db(path: Path, busy_timeout: float, *, check: bool) -> sqlite3.Connection:
    """Open (creating with mode 0600, in a 0700 directory), check and migrate the store.

    A damaged file (with ``check``, every page is read first: see :meth:`Store.check`)
    or one labd cannot write raises :class:`StoreDamaged`; a newer schema raises
    :class:`ConfigError`."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except PermissionError as exc:
        raise StoreDamaged(f"history store {path} is read-only: {exc.strerror}") from None
    conn = sqlite3.connect(path, check_same_thread=False, timeout=busy_timeout)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"history store {path} has schema {version}, newer than this labd's "
                f"{SCHEMA_VERSION}: upgrade ipclab or use another --state-dir"
            )
        if version < SCHEMA_VERSION:
            conn.executescript(f"BEGIN;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;")
        _add_columns(conn)
        if check:
            quick_check(conn, path)
        with conn:  # a write, so a read-only file shows now and not at the first set
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
            sqlite3.SQLITE_FULL,
            sqlite3.SQLITE_IOERR,
        ):
            raise ConfigError(f"cannot open history store {path}: {exc}") from None
        raise StoreDamaged(f"history store {path} cannot be used: {exc}") from None
    except StoreDamaged:
        conn.close()
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _add_columns(conn: sqlite3.Connection) -> None:
    """Give a store made by an older labd the columns added since."""
    for table, column, kind in _ADDED_COLUMNS:
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            with conn:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        rows = [(str(exc),)]
    problems = [
        line.strip()
        for row in rows
        for line in str(row[0]).splitlines()
        if line.strip() and not line.startswith("***")
    ]
    if problems != ["ok"]:
        raise StoreDamaged(f"history store {path} is damaged: {'; '.join(problems[:3])}")
