"""What a client reads of one set: its status, its whole record (inspect), its output
(tail), its story (explain) and its exact tallies, whether it runs, ended in this run
or is only in the history."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from labd import explain
from labd.errors import HistoryError, NoSuchSet, SetError
from labd.history import History
from labd.printlog import read_log_tail, within_bytes
from labd.procstats import WATCH_S, ProcStats
from labd.protocol import (
    TAIL_MAX_BYTES,
    InspectRecord,
    MemoryRecord,
    ProcessRecord,
    StatusRecord,
    TailRecord,
)
from labd.setstatus import live_status, memory_per_worker, process_records, stored_status
from labd.settable import SetTable


class Views:
    def __init__(
        self,
        table: SetTable,
        store: History,
        stats: ProcStats,
        log_path: Callable[[int], Path],
    ) -> None:
        self._table = table
        self._store = store
        self._stats = stats
        self._log_path = log_path

    def status_of(self, set_id: int) -> StatusRecord:
        pset, ended = self._table.lookup(set_id)
        if pset is not None:
            return live_status(pset)
        if ended is not None:
            return ended.status.copy()
        row = self._store.get(set_id)
        if row is None:
            raise NoSuchSet(f"no set {set_id} (see: labctl status)")
        return stored_status(row)

    def inspect(self, set_id: int) -> InspectRecord:
        pset, ended = self._table.lookup(set_id)
        status = self.status_of(set_id)
        try:
            row = self._store.get(set_id)
        except HistoryError:
            row = None  # the history cannot be read now: the live figures still can
        procs: list[ProcessRecord] = []
        if pset is not None:
            pset.watched_until = time.monotonic() + WATCH_S  # sampled each second now
            procs = process_records(pset, self._stats)
        elif ended is not None:
            procs = list(ended.processes)
        elif row is not None and isinstance(row["final"], dict):
            procs = list(cast(dict[str, Any], row["final"]).get("processes") or [])
        memory: MemoryRecord = memory_per_worker(procs)
        events = row.get("events", []) if row else []
        extra = {"processes": procs, "memory_per_worker": memory, "events": events}
        out = cast(InspectRecord, {**status, **extra})
        if pset is not None and pset.metrics is not None and pset.live:
            figures, out["per_counter"] = pset.metrics.consistent()
            same = {**figures.as_record(), "sampled_at": figures.sampled_at}
            out = cast(InspectRecord, {**out, **same})  # the same read as per_counter
        elif pset is not None and pset.metrics is not None:
            out["per_counter"] = pset.metrics.per_counter()
        elif ended is not None and ended.per_counter:
            out["per_counter"] = ended.per_counter
        return out

    def explain(self, set_id: int) -> dict[str, Any]:
        """The story of a set (labd.explain), from its trace if it ran with trace=yes."""
        pset, ended = self._table.lookup(set_id)
        status = self.inspect(set_id)
        live = pset is not None and pset.live
        trace = pset.mechanism.trace() if pset is not None else ended.trace if ended else None
        lines = [str(text) for _seq, text in self.tail(set_id, 0, 10_000)["lines"]]
        return explain.story(status, trace, live, lines)

    def tail(self, set_id: int, after: int = 0, limit: int = 100) -> TailRecord:
        pset, ended = self._table.lookup(set_id)
        state: str
        if pset is not None:
            lines, last = pset.output.lines(after, limit)
            state = pset.state
        else:
            if ended is not None:
                state, dropped = ended.status["state"], ended.dropped
            else:
                row = self._store.get(set_id)
                if row is None:
                    raise NoSuchSet(f"no set {set_id} (see: labctl status)")
                state, dropped = row["state"], 0
            lines = read_log_tail(self._log_path(set_id), limit, after, dropped)
            last = lines[-1][0] if lines else after
        lines = within_bytes(lines, TAIL_MAX_BYTES, newest=after <= 0)
        return {"id": set_id, "lines": list(lines), "last": last, "state": state}

    def tallies(self, set_id: int) -> dict[str, Any]:
        """A running set's exact tallies read now (see SetMetrics.tallies)."""
        pset = self._table.get(set_id)
        if pset is None or pset.metrics is None or pset.state != "running":
            state = pset.state if pset is not None else "not running"
            raise SetError(f"set {set_id} is {state}, not running (see: labctl status {set_id})")
        try:
            return pset.metrics.tallies()
        except ValueError:
            raise SetError(f"set {set_id} has ended (see: labctl status {set_id})") from None
