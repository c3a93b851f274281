"""The thread in labd that runs experiments, one after another, run by run.

Experiments wait in a queue; the runner takes the oldest, runs its plan in the recorded
order, stores each run as it ends, and marks the experiment done, cancelled, failed, or
interrupted (labd stopping). While the history store is degraded (a full disk, an I/O
error, a foreign lock) the experiment waits before its next run, and goes on when the
store recovers; its records wait in memory meanwhile (:mod:`labd.experiments.records`).
A cancel sets an event every wait of the current run watches, so it takes effect within
moments and the run's set is stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labd.errors import HistoryError, LabError
from labd.experiments.machine import load
from labd.experiments.measure import Cancelled, RunTag, run_once
from labd.experiments.records import Records
from labd.experiments.spec import Plan, plan_from_dict
from labd.owners import LABD, Caller

if TYPE_CHECKING:
    from labd.lab import Lab

log = logging.getLogger("labd.experiments")
HISTORY_POLL = 0.5  # seconds between looks at a degraded history store, in a run's wait


@dataclass
class Progress:
    experiment: int
    run: int  # 0-based index of the run under way
    runs: int
    case: str
    started: float  # monotonic, when the experiment started


class Runner:
    def __init__(self, lab: Lab, records: Records) -> None:
        self._lab = lab
        self._records = records
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._closing = False
        self._cancel = threading.Event()
        self._current: int | None = None
        self._owners: dict[int, Caller] = {}  # who asked, by experiment (queued or running)
        self.progress: Progress | None = None
        self._thread = threading.Thread(target=self._loop, name="experiments", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, exp_id: int, owner: Caller = LABD) -> None:
        with self._cond:
            self._owners[exp_id] = owner
            self._queue.append(exp_id)
            self._cond.notify()

    def owner(self, exp_id: int) -> Caller | None:
        """Who asked for a queued or running experiment (None once it is over)."""
        with self._cond:
            return self._owners.get(exp_id)

    def cancel(self, exp_id: int) -> bool:
        """Cancel a queued or running experiment; False if it is neither."""
        with self._cond:
            if exp_id in self._queue:
                self._queue.remove(exp_id)
                self._owners.pop(exp_id, None)
                self._records.set_state(exp_id, "cancelled", "cancelled before it started")
                return True
            if self._current == exp_id:
                self._cancel.set()
                return True
        return False

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cancel.set()
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                exp_id = self._queue.popleft()
                self._current = exp_id
                self._cancel = threading.Event()
            try:
                self._run(exp_id)
            except Exception:
                log.exception("experiment %d", exp_id)
                self._records.set_state(exp_id, "failed", "internal error (see labd's log)")
            finally:
                with self._cond:
                    self._current = None
                    self._owners.pop(exp_id, None)
                    self.progress = None

    def _run(self, exp_id: int) -> None:
        record = self._records.get(exp_id)
        assert record is not None
        plan = plan_from_dict(record["plan"])
        machine = record["machine"]
        machine["load_before"] = load()
        self._records.set_machine(exp_id, machine)
        self._records.set_state(exp_id, "running")
        log.info("experiment %d: %d runs", exp_id, len(plan.order))
        state, error = self._runs(exp_id, plan)
        machine["load_after"] = load()
        self._records.set_machine(exp_id, machine)
        if state == "cancelled" and self._closing:
            state, error = "interrupted", "labd stopped while it ran"
        self._records.set_state(exp_id, state, error)
        log.info("experiment %d: %s%s", exp_id, state, f" ({error})" if error else "")

    def _runs(self, exp_id: int, plan: Plan) -> tuple[str, str | None]:
        started = time.monotonic()
        for seq, (point, repeat) in enumerate(plan.order):
            if self._cancel.is_set():
                return "cancelled", None
            self.progress = Progress(exp_id, seq, len(plan.order), _label(plan, point), started)
            self._records.run_started(exp_id, seq, point, repeat)

            def spawned(set_id: int, seq: int = seq) -> None:
                self._records.run_set(exp_id, seq, set_id)

            try:
                tag = RunTag(exp_id, point, repeat)
                result = self._run_once(plan, tag, spawned)
            except Cancelled:
                self._records.run_ended(exp_id, seq, "cancelled", None)
                return "cancelled", None
            except LabError as exc:
                if self._cancel.is_set():
                    self._records.run_ended(exp_id, seq, "cancelled", None)
                    return "cancelled", None
                self._records.run_ended(exp_id, seq, "failed", None, exc.message)
                return "failed", f"run {seq + 1} ({_label(plan, point)}): {exc.message}"
            self._records.run_ended(exp_id, seq, "done", result)
        return "done", None

    def _run_once(self, plan: Plan, tag: RunTag, spawned: Callable[[int], None]) -> Any:
        """One run; while the history store is degraded (its set could not be recorded)
        the experiment waits for it to recover, then goes on (Cancelled if cancelled)."""
        owner = self.owner(tag.experiment) or LABD
        said = False
        while True:
            health = self._lab.store.health()
            if health["state"] == "ok":
                if said:
                    log.warning("experiment %d goes on: the history recovered", tag.experiment)
                try:
                    return run_once(self._lab, plan, tag, self._cancel, spawned, owner)
                except HistoryError:  # degraded since: the spawn was refused
                    health = self._lab.store.health()
            if not said:
                log.warning(
                    "experiment %d waits: the history store is degraded (%s); it goes on "
                    "once the store recovers",
                    tag.experiment,
                    health["reason"],
                )
                said = True
            if self._cancel.wait(HISTORY_POLL):
                raise Cancelled()


def _label(plan: Plan, point: int) -> str:
    p = plan.points[point]
    text = f"{p.case} n={p.counters}"
    return f"{text} {p.sweep_key}={p.sweep_value}" if p.sweep_key else text
