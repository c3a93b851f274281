"""The background thread that samples every live set: figures 10 times a second,
latency once a second (into the history store), and the CPU and memory of the
processes of sets someone inspected lately (see :mod:`labd.procstats`). Requests are
served from what it cached, never computed per request: each tick that sampled a live
set ends the status snapshot's generation and, while clients ask, builds the next
snapshot (``on_tick``, see :mod:`labd.snapshot`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from labd.processset import ProcessSet
from labd.procstats import ProcStats
from labd.protocol import State

log = logging.getLogger("labd.sampler")
FAST = 0.1
SLOW = 1.0


class Sampler:
    def __init__(
        self,
        live_sets: Callable[[], list[ProcessSet]],
        store_rows: Callable[[list[tuple[object, ...]]], None],
        on_deadline: Callable[[ProcessSet], None],
    ) -> None:
        self._live_sets = live_sets
        self._store_rows = store_rows
        self._on_deadline = on_deadline
        self.stats = ProcStats()
        self.on_tick: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        next_slow = time.monotonic()
        while not self._stop.wait(FAST):
            sets = self._live_sets()
            for s in sets:
                self._sample(s)
            if sets:
                self.on_tick()
            now = time.monotonic()
            if now >= next_slow:
                next_slow = now + SLOW
                self._slow(sets)

    def _sample(self, s: ProcessSet) -> None:
        if s.metrics is None or s.state == State.STARTING:
            return
        try:
            s.metrics.sample()
        except Exception as exc:  # e.g. the Manager server died under an observation
            log.debug("set %d: sample: %s", s.spec.id, exc)
        due = s.deadline is not None and time.monotonic() >= s.deadline
        if due and s.state in (State.RUNNING, State.DEGRADED):
            s.deadline = None
            self._on_deadline(s)

    def _slow(self, sets: list[ProcessSet]) -> None:
        rows = []
        pids: set[int] = set()
        at = time.time()
        for s in sets:
            if s.metrics is None or s.state == State.STARTING:
                continue
            try:
                s.metrics.sample_latency()
            except Exception as exc:
                log.debug("set %d: latency: %s", s.spec.id, exc)
            rows.append(s.metrics.figures.row(s.spec.id, at))
            if s.watched_until > time.monotonic():
                pids.update(w.pid for w in s.workers if w.alive)
        self.stats.update(pids)
        if rows:
            try:
                self._store_rows(rows)
            except Exception as exc:  # e.g. the store is locked: one line, the set goes on
                log.error("storing samples: %s: %s", type(exc).__name__, exc)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
