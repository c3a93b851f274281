"""Stopping sets: claiming them (a set's ``busy`` lock), asking every counter at once,
then winding each up on a thread of its own, within the caller's bounds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from labd.errors import NoSuchSet, SetBusy
from labd.history import History
from labd.leftovers import Members, Tracker
from labd.owners import LABD, Caller
from labd.processset import ProcessSet
from labd.protocol import WAIT_HELD_S, State, StatusRecord
from labd.settable import SetTable, needs_stop
from labd.stopplan import StopPlan, StopTimes

log = logging.getLogger("labd.lab")
OUTPUT_DRAIN = 2.0  # seconds to wait for the last printer lines after a stop


class Stopper:
    def __init__(
        self,
        table: SetTable,
        store: History,
        tracker: Tracker,
        times: StopTimes,
        end: Callable[[ProcessSet], None],
        status_of: Callable[[int], StatusRecord],
    ) -> None:
        self._table = table
        self._store = store
        self._tracker = tracker
        self._times = times
        self._end = end
        self._status_of = status_of

    def stop(
        self, ids: Sequence[int] | str, caller: Caller = LABD, until: float | None = None
    ) -> list[StatusRecord]:
        """Stop sets and wait until they are stopped; ``"all"`` stops every live set
        ``caller`` may stop (an admin's: all; anyone else's: their own). ``until``, a
        monotonic instant, bounds the whole stop (as at shutdown)."""
        targets, mine, held = self._claim(ids, caller)
        waiters = [  # "all": sets another call starts or stops, waited for meanwhile
            threading.Thread(target=self._stop_held, args=(s, until), name=f"held-{s.spec.id}")
            for s in held
        ]
        for t in waiters:
            t.start()
        try:
            self._stop_mine(mine, until)
        finally:
            for s in mine:
                s.busy.release()
            for t in waiters:
                t.join()
        return [self._status_of(i) for i in targets]

    def _stop_mine(self, mine: list[ProcessSet], until: float | None) -> None:
        self._tracker.scan(_members(mine))  # what their workers started, up to now
        for s in mine:
            s.ask_counters()
        threads = [threading.Thread(target=self._finish, args=(s, until)) for s in mine[1:]]
        for t in threads:
            t.start()
        if mine:
            self._finish(mine[0], until)
        for t in threads:
            t.join()

    def _stop_held(self, s: ProcessSet, until: float | None) -> None:
        """Wait for the call that holds ``s``, then stop it if it still needs it. Within
        a bounded stop (shutdown), a stop under way is hurried to end by ``until`` too
        (its figures recorded before labd goes on closing), and a set being started is
        waited for a share of the time left."""
        held_for = WAIT_HELD_S
        if until is not None:
            s.stop_clock.hurry(until)
            left = until - time.monotonic()
            stopping = s.state == State.STOPPING
            held_for = left + OUTPUT_DRAIN if stopping else StopPlan.HELD_SHARE * left
        if not s.busy.acquire(timeout=max(0.0, held_for)):
            log.warning("set %d: still busy after %.1fs, not stopped", s.spec.id, held_for)
            return
        try:
            if needs_stop(s):
                self._stop_mine([s], until)
        finally:
            s.busy.release()

    def _claim(
        self, ids: Sequence[int] | str, caller: Caller
    ) -> tuple[list[int], list[ProcessSet], list[ProcessSet]]:
        """The targets, the live ones now ours to stop, and (for "all") those another
        operation holds, which the caller waits for."""
        mine: list[ProcessSet] = []
        held: list[ProcessSet] = []
        sets = self._table.sets
        with self._table.lock:
            if ids == "all":
                targets = sorted(
                    i for i, s in sets.items() if needs_stop(s) and caller.may_stop(s.spec.owner)
                )
            else:
                assert not isinstance(ids, str), "only 'all' is a word here"
                targets = list(ids)
                for i in targets:
                    if i not in sets and self._store.get(i) is None:
                        raise NoSuchSet(f"no set {i} (see: labctl status)")
                    if i in sets and needs_stop(sets[i]):
                        caller.check_stop(i, sets[i].spec.owner)
            for i in targets:
                s = sets.get(i)
                if s is None or not needs_stop(s):
                    continue
                if s.busy.acquire(blocking=False):
                    mine.append(s)
                elif ids == "all":
                    held.append(s)
                else:
                    for m in mine:
                        m.busy.release()
                    what = "already stopping" if s.state == State.STOPPING else f"busy ({s.state})"
                    raise SetBusy(f"set {i} is {what} (see: labctl status {i})")
        return targets, mine, held

    def _finish(self, s: ProcessSet, until: float | None = None) -> None:
        try:
            s.finish_stop(self._times, until)
        except Exception:
            log.exception("set %d: stopping", s.spec.id)
        self._tracker.end_set(s.spec.id)
        if s.output_done is not None and not s.output_done.wait(OUTPUT_DRAIN):
            log.warning("set %d: printer output still open after the stop", s.spec.id)
        self._end(s)
        self._record(s.spec.id, "that its processes ended", self._store.forget_workers, s.spec.id)
        log.info("set %d: %s", s.spec.id, s.state)

    def _record(self, set_id: int, what: str, write: Callable[..., None], *args: Any) -> None:
        """Write to the history; a write that fails is logged and never keeps a set from
        going on with its life (a stop from stopping its workers)."""
        try:
            write(*args)
        except Exception as exc:
            log.error("set %d: cannot record %s in the history store: %s", set_id, what, exc)

    def quietly(self, s: ProcessSet) -> None:
        """Stop one set, logging instead of raising (a background stop)."""
        try:
            self.stop([s.spec.id])
        except SetBusy:
            pass  # someone else is stopping it
        except Exception:
            log.exception("set %d: stopping in the background", s.spec.id)

    def in_background(self, s: ProcessSet) -> None:
        threading.Thread(
            target=self.quietly, args=(s,), name=f"stop-{s.spec.id}", daemon=True
        ).start()


def _members(sets: list[ProcessSet]) -> Members:
    return {s.spec.id: {w.pid for w in s.workers if w.alive} for s in sets}
