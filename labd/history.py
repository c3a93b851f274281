"""The history as labd uses it: the store behind a guard that rides out storage faults.

A full disk, an I/O error or another process holding the write lock must not stop labd:
running sets keep running and every request is served. When a write fails the history
is *degraded*, with the reason in words (:func:`labd.storefaults.reason_of`): the
failed write and every later one wait in memory, in order (event times taken when they
happened), new sets are refused with that reason (a set labd could not record would
break the promise that ids are never reused and every set is in the history), and a
background thread retries once a second. When the fault clears, the waiting writes are
made (samples, states, final figures) and the history is healthy again.

While the store is degraded at most :data:`MAX_PENDING_ROWS` sample rows wait; older
ones are dropped first (states and final figures are always kept).

The same thread notices the file deleted or replaced under a running labd and writes
back what labd holds (:meth:`labd.store.Store.restore`); set ids stay unique through any
of it thanks to the high-water mark (:mod:`labd.idmark`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from labd import idmark
from labd.errors import HistoryError, NoSuchSet, StoreDamaged
from labd.protocol import EventRecord, HistoryRecord, StatusRecord
from labd.store import FILENAME, SetRow, Store
from labd.storefaults import damage_note, kind_of, move_aside, open_store, reason_of

log = logging.getLogger("labd.history")
MAX_PENDING_ROWS = 100_000
RETRY_EVERY = 1.0
FAULTS = (sqlite3.Error, OSError)

T = TypeVar("T")
Write = tuple[Callable[..., Any], tuple[Any, ...], int]  # function, arguments, sample rows


class History:
    """The history store, guarded; safe to call from any thread."""

    def __init__(
        self,
        store: Store,
        mark: idmark.IdMark,
        *,
        warnings: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        ids_aside: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self._mark = mark
        #: the highest ids (by table) of a file moved aside at start: none given again
        self.ids_aside: dict[str, int] = dict(ids_aside or {})
        self._clock = clock
        self.warnings: list[str] = list(warnings)
        self._lock = threading.Lock()  # the fields below; direct writes run under it
        self._pending: deque[Write] = deque()
        self._rows = 0  # sample rows waiting
        self._reason: str | None = None
        self._since = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)

    @classmethod
    def open(cls, state_dir: Path, *, clock: Callable[[], float] = time.time) -> History:
        """The history of ``state_dir``; a damaged or read-only file is moved aside."""
        store, warning, highest = open_store(state_dir / FILENAME)
        mark = idmark.IdMark(state_dir / idmark.FILENAME)
        mark.raise_to(highest.get("sets", 0))
        warnings = [warning] if warning else []
        return cls(store, mark, warnings=warnings, clock=clock, ids_aside=highest)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop retrying, make one last attempt, then close the store."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self._flush()
        with self._lock:
            if self._pending:
                log.error(
                    "history store: %d write(s) could not be made (%s): lost",
                    len(self._pending),
                    self._reason,
                )
        self.store.close()

    # --- health ------------------------------------------------------------------------
    def health(self) -> HistoryRecord:
        """``{"state": "ok" | "degraded", "reason", "since", "pending"}``."""
        with self._lock:
            return {
                "state": "ok" if self._reason is None else "degraded",
                "reason": self._reason,
                "since": self._since if self._reason is not None else None,
                "pending": len(self._pending),
            }

    def _refusal(self) -> HistoryError:
        reason = self._reason or ""
        where = self.store.path
        hint = {
            "disk full": f"free space for {where.parent}",
            "locked by another process": f"end the process that holds {where} open for writing",
        }.get(reason.split(" (")[0], "see labd's log")
        return HistoryError(
            f"the history store is degraded: {reason}; labd starts no new set or "
            f"experiment until it recovers, running ones go on ({hint})"
        )

    # --- writes ------------------------------------------------------------------------
    def new_set(
        self,
        mechanism: str,
        name: str,
        counters: int,
        printers: int,
        params: dict[str, Any],
        owner: str | None = None,
    ) -> int:
        """Record a new set and return its id; refused while the history is degraded."""
        with self._lock:
            if self._reason is not None:
                raise self._refusal()
            try:
                set_id = self._mark.take(self.store.max_id())
                self.store.new_set(
                    mechanism,
                    name,
                    counters,
                    printers,
                    params,
                    at=self._clock(),
                    set_id=set_id,
                    owner=owner,
                )
            except FAULTS as exc:
                self._degrade(exc, probe=True)
                raise self._refusal() from None
        return set_id

    def new_record(self, fn: Callable[[], T]) -> T:
        """Make a write that gives a new id (an experiment's): at once or not at all,
        refused while the history is degraded, as a new set is."""
        with self._lock:
            if self._reason is not None:
                raise self._refusal()
            try:
                return fn()
            except FAULTS as exc:
                self._degrade(exc, probe=True)
                raise self._refusal() from None

    def write(self, fn: Callable[..., Any], *args: Any) -> None:
        """Make a write now, or after the writes waiting before it once the fault clears
        (an experiment's, given its times: they are made later as they happened)."""
        self._write(fn, args)

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """A read; a fault raises :class:`HistoryError` (damage is noted for the next start)."""
        result: T = self._read(fn, *args)
        return result

    def set_state(self, set_id: int, state: str, detail: str = "", at: float | None = None) -> None:
        now = self._clock() if at is None else at
        self._write(self.store.set_state, (set_id, state, detail, now))

    def finish(self, set_id: int, final: StatusRecord) -> None:
        self._write(self.store.finish, (set_id, final))

    def add_workers(self, set_id: int, rows: Sequence[tuple[int, float]]) -> None:
        self._write(self.store.add_workers, (set_id, list(rows)))

    def forget_workers(self, set_id: int) -> None:
        self._write(self.store.forget_workers, (set_id,))

    def add_samples(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self._write(self.store.add_samples, (list(rows),), len(rows))

    def mark_interrupted(self, at: float | None = None) -> list[int]:
        """At start: sets a dead labd ran are marked interrupted (see Store); none if
        the history cannot say (labd starts anyway, and says why)."""
        try:
            return self.store.mark_interrupted(self._clock() if at is None else at)
        except FAULTS as exc:
            if kind_of(exc) == "damaged":
                self._note_damage(f"history store {self.store.path}: {reason_of(exc)}")
            log.error("cannot mark the sets of an earlier labd interrupted: %s", reason_of(exc))
            return []

    def _write(self, fn: Callable[..., Any], args: tuple[Any, ...], rows: int = 0) -> None:
        with self._lock:
            if self._reason is None and not self._pending:
                try:
                    fn(*args)
                    return
                except FAULTS as exc:
                    self._degrade(exc)
            self._pending.append((fn, args, rows))
            self._rows += rows
            self._drop_oldest_rows()

    def _drop_oldest_rows(self) -> None:
        """Keep at most MAX_PENDING_ROWS sample rows waiting (lock held); never the
        first write, which the retry thread may be making."""
        while self._rows > MAX_PENDING_ROWS:
            for i in range(1, len(self._pending)):
                if self._pending[i][2]:
                    self._rows -= self._pending[i][2]
                    del self._pending[i]
                    break
            else:
                return

    def _degrade(self, exc: BaseException, *, probe: bool = False) -> None:
        """Note a fault (lock held): say so once, and again if its kind changes. With
        ``probe`` (no write of ours waits), a small write waits, to tell when it clears."""
        reason = reason_of(exc)
        if self._reason is None:
            self._since = self._clock()
            log.warning(
                "history store degraded: %s: running sets go on, their records wait in "
                "memory, new sets are refused until it recovers",
                reason,
            )
        elif self._reason.split(" (")[0] != reason.split(" (")[0]:
            log.warning("history store still degraded, now: %s", reason)
        self._reason = reason
        if probe and not self._pending:
            self._pending.append((self.store.probe, (), 0))

    # --- catching up -----------------------------------------------------------------
    def _run(self) -> None:
        if not self.store.checked:  # a large file, not checked page by page at open
            try:
                self.store.check()
            except StoreDamaged as exc:
                self._note_damage(exc.message)
            self.store.checked = True
        while not self._stop.wait(RETRY_EVERY):
            try:
                self._check_file()
                self._flush()
            except Exception:
                log.exception("history store: retrying")

    def _flush(self) -> None:
        """Make the waiting writes in order until one fails; healthy once none waits."""
        written = 0
        while True:
            with self._lock:
                if not self._pending:
                    if self._reason is not None:
                        log.warning(
                            "history store recovered after %.0f s: %d waiting write(s) made",
                            max(0.0, self._clock() - self._since),
                            written,
                        )
                        self._reason = None
                    return
                first = self._pending[0]
            try:
                first[0](*first[1])
            except NoSuchSet as exc:
                log.warning("history store: a waiting write is dropped: %s", exc.message)
            except FAULTS as exc:
                with self._lock:
                    self._degrade(exc)
                return
            written += 1
            with self._lock:
                if self._pending and self._pending[0] is first:
                    self._pending.popleft()
                    self._rows -= first[2]

    def _check_file(self) -> None:
        """Write the history back if its file was deleted or replaced under labd."""
        path = self.store.path
        try:
            inode: int | None = os.stat(path).st_ino
        except FileNotFoundError:
            inode = None
        if inode == self.store.inode:
            return
        try:
            aside = move_aside(path, "replaced") if inode is not None else None
            self.store.restore()
        except FAULTS as exc:
            with self._lock:
                self._degrade(exc, probe=True)
            return
        what = f"replaced (the new file moved aside to {aside.name})" if aside else "deleted"
        warning = f"history store {path} was {what} while labd ran: labd wrote its history back"
        log.warning("%s", warning)
        self.warnings.append(warning)

    # --- reading -----------------------------------------------------------------------
    def get(self, set_id: int) -> SetRow | None:
        record: SetRow | None = self._read(self.store.get, set_id)
        if record is not None:
            record["events"] = record.get("events", []) + self._pending_events(set_id)
        return record

    @property
    def path(self) -> Path:
        return self.store.path

    def history(self, limit: int = 20, mechanism: str | None = None) -> list[SetRow]:
        rows: list[SetRow] = self._read(self.store.history, limit, mechanism)
        return rows

    def samples(self, set_id: int, limit: int | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._read(self.store.samples, set_id, limit)
        return rows

    def workers(self, set_ids: Sequence[int]) -> list[tuple[int, int, float]]:
        rows: list[tuple[int, int, float]] = self._read(self.store.workers, set_ids)
        return rows

    def _pending_events(self, set_id: int) -> list[EventRecord]:
        with self._lock:
            waiting = [args for fn, args, _ in self._pending if fn == self.store.set_state]
        return [
            {"state": state, "at": at, "detail": detail}
            for sid, state, detail, at in waiting
            if sid == set_id
        ]

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except FAULTS as exc:
            if kind_of(exc) == "damaged":
                self._note_damage(f"history store {self.store.path}: {reason_of(exc)}")
            raise HistoryError(f"the history store cannot be read: {reason_of(exc)}") from None

    def _note_damage(self, problem: str) -> None:
        """Say it once; and note it, so that the next start moves the file aside."""
        warning = f"{problem}: it is moved aside when labd next starts"
        with self._lock:
            if warning in self.warnings:
                return
            self.warnings.append(warning)
        log.error("%s", warning)
        try:
            damage_note(self.store.path).write_text(problem + "\n")
        except OSError as exc:
            log.error("cannot note the damage for the next start: %s", exc)
