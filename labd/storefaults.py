"""What can go wrong with the history file, said in words, and the file moved aside.

:func:`reason_of` names a storage fault the way an operator acts on it (disk full, I/O
error, locked by another process, read-only, damaged). :func:`open_store` opens the
history at start: a damaged or read-only file is moved aside (kept, named with the time)
and a new one begun, so labd starts and says so instead of dying.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from pathlib import Path

from labd.errors import ConfigError, StoreDamaged
from labd.store import Store

log = logging.getLogger("labd.history")
ID_TABLES = ("sets", "experiments")  # whose ids must never be given again

_SQLITE_KINDS = {
    sqlite3.SQLITE_FULL: "disk full",
    sqlite3.SQLITE_IOERR: "I/O error",
    sqlite3.SQLITE_BUSY: "locked by another process",
    sqlite3.SQLITE_LOCKED: "locked by another process",
    sqlite3.SQLITE_READONLY: "read-only",
    sqlite3.SQLITE_CORRUPT: "damaged",
    sqlite3.SQLITE_NOTADB: "damaged",
    sqlite3.SQLITE_CANTOPEN: "cannot be opened",
}
_ERRNO_KINDS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk full",
    errno.EIO: "I/O error",
    errno.EROFS: "read-only",
    errno.EACCES: "read-only",
    errno.EPERM: "read-only",
}


def kind_of(exc: BaseException) -> str:
    """The fault's kind in words: disk full, I/O error, locked by another process..."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_KINDS:
            return _SQLITE_KINDS[code & 0xFF]
    if isinstance(exc, OSError) and exc.errno in _ERRNO_KINDS:
        return _ERRNO_KINDS[exc.errno]
    return "error"


def reason_of(exc: BaseException) -> str:
    """``KIND (what the library said)``, one line."""
    said = (str(exc) or type(exc).__name__).splitlines()[0]
    return f"{kind_of(exc)} ({said})"


def move_aside(path: Path, why: str) -> Path:
    """Rename ``path`` (and its -wal, -shm) to ``NAME.WHY-YYYYmmddTHHMMSSZ``; kept."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, dest)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, dest.with_name(dest.name + suffix))
    return dest


def open_store(path: Path) -> tuple[Store, str | None, dict[str, int]]:
    """The history store; a warning if the file found there had to be moved aside, and
    the highest ids that file still shows, by table (``sets``, ``experiments``), so
    that none is given again."""
    found = damage_note(path)
    try:
        problem = found.read_text().strip() if found.exists() else ""
    except OSError:
        problem = ""
    if not problem:
        try:
            return Store(path), None, {}
        except StoreDamaged as exc:
            problem = exc.message
    highest = {table: _highest_id(path, table) for table in ID_TABLES}
    try:
        dest = move_aside(path, "readonly" if "read-only" in problem else "damaged")
    except OSError as err:
        raise ConfigError(
            f"{problem}; cannot move it aside ({err.strerror}): move or repair it by hand"
        ) from None
    found.unlink(missing_ok=True)
    warning = f"{problem}: moved aside to {dest.name}, a new history begun"
    log.warning("%s", warning)
    return Store(path), warning, highest


def damage_note(path: Path) -> Path:
    """Where labd notes damage it found while running, for the next start to act on."""
    return path.with_name(path.name + ".damage-found")


def _highest_id(path: Path, table: str) -> int:
    """The highest id of ``table`` (sets, experiments) a damaged file still shows, read
    only, from what can be read of it; 0 if nothing can."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=0.5)
    except sqlite3.Error:
        return 0
    found = [0]
    try:
        for query, args in (
            ("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)),
            (f"SELECT MAX(id) FROM {table}", ()),
        ):
            try:
                row = conn.execute(query, args).fetchone()
            except sqlite3.Error:
                continue
            found.append(int(row[0] or 0) if row else 0)
        return max(found)
    finally:
        conn.close()
