"""The sets of this run: live ones, and what is kept of those that ended.

One lock guards the table. It is the leaf of the lock order (:mod:`labd.lifecycle`):
nothing is waited for under it; it only ever *tries* a set's ``busy`` lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from labd.processset import ProcessSet
from labd.protocol import ProcessRecord, State, StatusRecord


@dataclass(frozen=True)
class Ended:
    """What is kept of a set that ended in this run."""

    status: StatusRecord
    per_counter: list[int]
    dropped: int  # its output's lines no longer in the log files (PrintLog.dropped)
    text: str = ""  # the final status as JSON text, serialised once
    processes: list[ProcessRecord] = field(default_factory=list)  # for inspect
    trace: dict[str, Any] | None = None  # with trace=yes: what the counters recorded


class SetTable:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sets: dict[int, ProcessSet] = {}  # until stopped; then in ended
        #: sets ended in this run, by their final status alone (with per_counter for
        #: inspect): their processes, output ring and metrics are let go
        self.ended: dict[int, Ended] = {}
        self.closing = False  # no new set once labd is shutting down

    def lookup(self, set_id: int) -> tuple[ProcessSet | None, Ended | None]:
        """The set if it is in this run's table, else what is kept of it if it ended."""
        with self.lock:
            return self.sets.get(set_id), self.ended.get(set_id)

    def get(self, set_id: int) -> ProcessSet | None:
        with self.lock:
            return self.sets.get(set_id)

    def live(self) -> list[ProcessSet]:
        with self.lock:
            return [s for s in self.sets.values() if s.live]

    def add(self, pset: ProcessSet) -> None:
        """Under :attr:`lock`, by the caller that checked the limits."""
        self.sets[pset.spec.id] = pset

    def end(self, set_id: int, ended: Ended) -> None:
        with self.lock:
            self.ended[set_id] = ended
            del self.sets[set_id]

    def all(self) -> tuple[list[ProcessSet], list[Ended]]:
        with self.lock:
            return list(self.sets.values()), list(self.ended.values())


def needs_stop(s: ProcessSet) -> bool:
    """Live, or failed with processes and resources not wound up yet."""
    return s.live or (s.state == State.FAILED and bool(s.workers) and s.stopped_at is None)
