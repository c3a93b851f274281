"""The core: every behaviour of labd is a method of :class:`Lab`.

The rpyc service, signals and (later) anything else are thin adapters over it. Lab
guards its table of sets with one lock it owns; a stop holds a set's own ``busy`` lock,
so a second conflicting operation fails fast instead of queueing. No method holds the
Lab lock while waiting for processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from labd import __version__, explain
from labd.bounded import HookTimeout
from labd.collector import Collector
from labd.errors import LabError, LimitError, NoSuchSet, SetBusy, SetError, UsageError
from labd.experiments.core import Experiments
from labd.leftovers import Members, Tracker, end_leftovers, record_workers
from labd.manager_host import ManagerHost
from labd.mechanisms.base import Mechanism
from labd.params import COMMON_PARAMS, resolve
from labd.printlog import PrintLog, read_log_tail
from labd.processset import ProcessSet, SetEnv, SetSpec, Worker
from labd.protocol import (
    MAX_PER_SET,
    MAX_PROCESSES,
    PROTOCOL_VERSION,
    WAIT_HELD_S,
    InspectRecord,
    MechanismRecord,
    SpawnRecord,
    State,
    StatusRecord,
    TailRecord,
    VersionRecord,
)
from labd.reaper import Reaper
from labd.registry import Registry
from labd.sampler import Sampler
from labd.setstatus import live_status, stored_status
from labd.statedir import lock_state_dir
from labd.stopplan import StopPlan, StopTimes
from labd.store import Store

log = logging.getLogger("labd.lab")
OUTPUT_DRAIN = 2.0  # seconds to wait for the last printer lines after a stop
FORK_WARNING = (
    "start_method=fork in a threaded daemon: a child may deadlock on a lock another "
    "thread held at the fork (use forkserver, the default, or spawn)"
)
#: what the forkserver imports once, so workers start warm (every module of labd.worker)
PRELOAD = [
    "labd.worker.process",
    "labd.worker.contexts",
    "labd.worker.board",
    "labd.worker.pacing",
    "labd.worker.trace",
    "labd.worker.forkserver_hook",  # one line, not a traceback, if the forkserver dies
]


@dataclass(frozen=True)
class Ended:
    """What is kept of a set that ended in this run."""

    status: StatusRecord
    per_counter: list[int]
    dropped: int  # its output's lines no longer in the log files (PrintLog.dropped)
    trace: dict[str, Any] | None = None  # with trace=yes: what the counters recorded


@dataclass(frozen=True)
class Limits:
    per_set: int = MAX_PER_SET
    total: int = MAX_PROCESSES
    stop: StopTimes = field(default_factory=StopTimes)


class Lab:
    def __init__(
        self,
        state_dir: Path,
        *,
        registry: Registry | None = None,
        store: Store | None = None,
        limits: Limits = Limits(),
        runtime_dir: Path | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.state_dir = state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state_lock = lock_state_dir(state_dir)
        (state_dir / "logs").mkdir(mode=0o700, exist_ok=True)
        self.registry = registry if registry is not None else Registry()
        self.store = store if store is not None else Store(state_dir / "history.sqlite3")
        self.limits = limits
        self._on_change = on_change
        self._lock = threading.Lock()
        self._sets: dict[int, ProcessSet] = {}  # until stopped; then in _ended
        #: sets ended in this run, by their final status alone (with per_counter for
        #: inspect): their processes, output ring and metrics are let go
        self._ended: dict[int, Ended] = {}
        self._closing = False
        self.started_at = time.time()
        self.address = ""
        self._contexts: dict[str, multiprocessing.context.BaseContext] = {}
        private = (runtime_dir or state_dir) / f"manager-{os.getpid()}"
        # the Manager runs in a process of labd's own (spawn), not under the forkserver,
        # so that the forkserver dying (killed, or a fork failing at the process limit)
        # costs no running set
        self.manager = ManagerHost(private, self._context("spawn"), self._manager_died)
        self._tracker = Tracker()
        self._reaper = Reaper(self._worker_exited)
        self._collector = Collector()
        self._sampler = Sampler(self._live_sets, self.store.add_samples, self._deadline)
        self.experiments = Experiments(self)

    # --- life ----------------------------------------------------------------------
    def start(self) -> None:
        interrupted = self.store.mark_interrupted()
        if interrupted:
            log.warning(
                "sets %s were running when labd last stopped: marked interrupted",
                ", ".join(map(str, interrupted)),
            )
            end_leftovers(self.store, interrupted)
        # Validate every plugin now, then let the forkserver preload only those that
        # loaded: children start warm, and a plugin that raises at import cannot take
        # the forkserver down.
        self.registry.load_all()
        forkserver = self._context("forkserver")
        forkserver.set_forkserver_preload(PRELOAD + self.registry.modules())
        multiprocessing.forkserver.ensure_running()  # warm; restarted by the next spawn if it dies
        self._reaper.start()
        self._collector.start()
        self._sampler.start()
        self.manager.get()
        self.experiments.start()

    def close(self, within: float | None = None) -> None:
        """Stop every set (counters first, then printers), within ``within`` seconds if
        given (draining what it can, then ending the rest), then release everything."""
        self.experiments.close()  # its run under way ends first, marked interrupted
        with self._lock:
            self._closing = True
        self.stop("all", None if within is None else time.monotonic() + within)
        self._sampler.close()
        self._tracker.reap()
        self._reaper.close()
        self._collector.close()
        self.manager.shutdown()
        self.store.close()
        os.close(self._state_lock)

    def _context(self, method: str) -> multiprocessing.context.BaseContext:
        ctx = self._contexts.get(method)
        if ctx is None:
            ctx = multiprocessing.get_context(method)
            self._contexts[method] = ctx
        return ctx

    # --- queries ---------------------------------------------------------------------
    def version(self) -> VersionRecord:
        return {
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "address": self.address,
        }

    def mechanisms(self) -> list[MechanismRecord]:
        return self.registry.describe()

    def status(self, ids: Sequence[int] = ()) -> list[StatusRecord]:
        if not ids:
            with self._lock:
                ids = sorted([*self._sets, *self._ended])
        return [self._status_of(i) for i in ids]

    def inspect(self, set_id: int) -> InspectRecord:
        with self._lock:
            pset = self._sets.get(set_id)
            ended = self._ended.get(set_id)
        status = self._status_of(set_id)
        row = self.store.get(set_id)
        out = cast(InspectRecord, {**status, "events": row.get("events", []) if row else []})
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
        with self._lock:
            pset = self._sets.get(set_id)
            ended = self._ended.get(set_id)
        status = self.inspect(set_id)
        live = pset is not None and pset.live
        trace = pset.mechanism.trace() if pset is not None else ended.trace if ended else None
        lines = [str(text) for _seq, text in self.tail(set_id, 0, 10_000)["lines"]]
        return explain.story(status, trace, live, lines)

    def tail(self, set_id: int, after: int = 0, limit: int = 100) -> TailRecord:
        with self._lock:
            pset = self._sets.get(set_id)
            ended = self._ended.get(set_id)
        state: str
        if pset is not None:
            lines, last = pset.output.lines(after, limit)
            state = pset.state
        else:
            if ended is not None:
                state, dropped = ended.status["state"], ended.dropped
            else:
                row = self.store.get(set_id)
                if row is None:
                    raise NoSuchSet(f"no set {set_id} (see: labctl status)")
                state, dropped = row["state"], 0
            lines = read_log_tail(self._log_path(set_id), limit, after, dropped)
            last = lines[-1][0] if lines else after
        return {"id": set_id, "lines": list(lines), "last": last, "state": state}

    def tallies(self, set_id: int) -> dict[str, Any]:
        """A running set's exact tallies read now (see SetMetrics.tallies)."""
        with self._lock:
            pset = self._sets.get(set_id)
        if pset is None or pset.metrics is None or pset.state != "running":
            state = pset.state if pset is not None else "not running"
            raise SetError(f"set {set_id} is {state}, not running (see: labctl status {set_id})")
        try:
            return pset.metrics.tallies()
        except ValueError:
            raise SetError(f"set {set_id} has ended (see: labctl status {set_id})") from None

    # --- spawn -----------------------------------------------------------------------
    def spawn(self, mechanism: str, counters: int, params: Mapping[str, object]) -> SpawnRecord:
        cls = self.registry.get(mechanism)
        if type(counters) is not int or counters < 1:
            raise UsageError(f"the number of counters must be a positive integer, not {counters!r}")
        if counters > self.limits.per_set:
            raise LimitError(
                f"{counters} counters is above the limit of {self.limits.per_set} per set"
            )
        values = resolve(cls.params + COMMON_PARAMS, params, f"mechanism {mechanism!r}")
        if values["printers"] > self.limits.per_set:
            raise LimitError(
                f"{values['printers']} printers is above the limit of {self.limits.per_set} per set"
            )
        warnings = []
        if values["start_method"] == "fork":
            warnings.append(FORK_WARNING)
            log.warning("set uses %s", FORK_WARNING)
        pset = self._reserve(mechanism, counters, values, cls)  # holds pset.busy
        error: Exception | None = None
        try:
            pset.start(self._collector.add)
        except (LabError, HookTimeout) as exc:  # said in one line: no traceback to add
            log.error("set %d failed to start: %s", pset.spec.id, exc)
            pset.fail(f"could not start: {exc}")
            error = exc
        except Exception as exc:
            log.exception("set %d failed to start", pset.spec.id)
            pset.fail(f"could not start: {type(exc).__name__}: {exc}")
            error = exc
        finally:
            pset.busy.release()
        if pset.state == State.FAILED:  # failed to start, or failed while starting
            if pset.workers:  # ended now: at the process limit, a thread may not start
                self._stop_quietly(pset)
            else:
                pset.release()
                self._end(pset)
        if error is not None:
            raise SetError(f"set {pset.spec.id} failed to start: {error}") from None
        pids = [w.pid for w in pset.workers]
        self._record(pset.spec.id, "its processes", record_workers, self.store, pset.spec.id, pids)
        log.info("set %d: %s %d started", pset.spec.id, mechanism, counters)
        return {**self._status(pset), "warnings": warnings}

    def _reserve(
        self, mechanism: str, counters: int, values: dict[str, Any], cls: type[Mechanism]
    ) -> ProcessSet:
        need = counters + int(values["printers"])
        with self._lock:
            if self._closing:
                raise LabError("labd is shutting down")
            running = sum(s.spec.counters + s.spec.printers for s in self._sets.values() if s.live)
            if running + need > self.limits.total:
                raise LimitError(
                    f"this set would bring labd to {running + need} processes, "
                    f"above the limit of {self.limits.total} (stop some: labctl stop)"
                )
            set_id = self.store.new_set(
                mechanism, str(values["name"]), counters, int(values["printers"]), values
            )
            spec = SetSpec(set_id, mechanism, counters, values)
            env = SetEnv(
                set_id,
                counters,
                spec.printers,
                self._context(str(values["start_method"])),
                self.manager.get,
            )
            output = PrintLog(self._log_path(set_id))
            pset = ProcessSet(
                spec, cls(values), env, output, self._state_changed, self._reaper.watch
            )
            pset.busy.acquire()  # a stop waits until the set has started
            self._sets[set_id] = pset
        return pset

    def _log_path(self, set_id: int) -> Path:
        return self.state_dir / "logs" / f"set-{set_id}.log"

    # --- stop ------------------------------------------------------------------------
    def stop(self, ids: Sequence[int] | str, until: float | None = None) -> list[StatusRecord]:
        """Stop sets and wait until they are stopped; ``"all"`` stops every live set.
        ``until``, a monotonic instant, bounds the whole stop (as at shutdown)."""
        targets, mine, held = self._claim(ids)
        now = time.monotonic()
        held_for = WAIT_HELD_S  # for all of them together
        if until is not None:
            held_for = min(held_for, StopPlan.HELD_SHARE * (until - now))
        wait_until = now + held_for
        for s in held:  # "all": sets being started or stopped by someone else
            if s.busy.acquire(timeout=max(0.0, wait_until - time.monotonic())):
                if _needs_stop(s):
                    mine.append(s)
                else:
                    s.busy.release()
            else:
                log.warning("set %d: still busy after %.1fs, not stopped", s.spec.id, held_for)
        try:
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
        finally:
            for s in mine:
                s.busy.release()
        return [self._status_of(i) for i in targets]

    def _claim(
        self, ids: Sequence[int] | str
    ) -> tuple[list[int], list[ProcessSet], list[ProcessSet]]:
        """The targets, the live ones now ours to stop, and (for "all") those another
        operation holds, which the caller waits for."""
        mine: list[ProcessSet] = []
        held: list[ProcessSet] = []
        with self._lock:
            if ids == "all":
                targets = sorted(i for i, s in self._sets.items() if _needs_stop(s))
            else:
                assert not isinstance(ids, str), "only 'all' is a word here"
                targets = list(ids)
                for i in targets:
                    if i not in self._sets and self.store.get(i) is None:
                        raise NoSuchSet(f"no set {i} (see: labctl status)")
            for i in targets:
                s = self._sets.get(i)
                if s is None or not _needs_stop(s):
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
            s.finish_stop(self.limits.stop, until)
        except Exception:
            log.exception("set %d: stopping", s.spec.id)
        self._tracker.end_set(s.spec.id)
        if s.output_done is not None and not s.output_done.wait(OUTPUT_DRAIN):
            log.warning("set %d: printer output still open after the stop", s.spec.id)
        self._end(s)
        self._record(s.spec.id, "that its processes ended", self.store.forget_workers, s.spec.id)
        log.info("set %d: %s", s.spec.id, s.state)

    def _end(self, s: ProcessSet) -> None:
        """Record a set that is over, keep its final status, let go of the rest."""
        if s.stopped_at is None:  # it never ran a stop: failed before any process started
            s.stopped_at = time.time()
        if s.output_done is None:  # its output never reached the collector, which closes it
            s.output.close()
        final = self._status(s)
        self._record(s.spec.id, "its final figures", self.store.finish, s.spec.id, final)
        per_counter = s.metrics.per_counter() if s.metrics is not None else []
        with self._lock:
            self._ended[s.spec.id] = Ended(
                final, per_counter, s.output.dropped, s.mechanism.trace()
            )
            del self._sets[s.spec.id]

    def _stop_quietly(self, s: ProcessSet) -> None:
        try:
            self.stop([s.spec.id])
        except SetBusy:
            pass  # someone else is stopping it
        except Exception:
            log.exception("set %d: stopping in the background", s.spec.id)

    def _stop_in_background(self, s: ProcessSet) -> None:
        threading.Thread(
            target=self._stop_quietly, args=(s,), name=f"stop-{s.spec.id}", daemon=True
        ).start()

    # --- events ----------------------------------------------------------------------
    def _state_changed(self, s: ProcessSet, state: State, detail: str) -> None:
        self._record(
            s.spec.id, f"its state {state}", self.store.set_state, s.spec.id, state, detail
        )
        if state == State.FAILED and s.workers and not s.busy.locked():
            self._stop_in_background(s)  # reap what is left, release resources
        if self._on_change is not None:
            self._on_change(self.summary())

    def _record(self, set_id: int, what: str, write: Callable[..., None], *args: Any) -> None:
        """Write to the history; a write that fails is logged and never keeps a set from
        going on with its life (a stop from stopping its workers)."""
        try:
            write(*args)
        except Exception as exc:
            log.error("set %d: cannot record %s in the history store: %s", set_id, what, exc)

    def _worker_exited(self, s: ProcessSet, w: Worker) -> None:
        s.worker_exited(w)

    def _deadline(self, s: ProcessSet) -> None:
        log.info("set %d: duration reached", s.spec.id)
        self._stop_in_background(s)

    def _manager_died(self, generation: int) -> None:
        with self._lock:
            victims = [
                s for s in self._sets.values() if s.live and s.env.manager_generation == generation
            ]
        for s in victims:
            s.fail("the Manager server died")

    def _live_sets(self) -> list[ProcessSet]:
        with self._lock:
            return [s for s in self._sets.values() if s.live]

    def healthy(self) -> bool:
        """For the watchdog: the background threads live and the lock is not stuck."""
        if not self._lock.acquire(timeout=5):
            return False
        self._lock.release()
        return self._reaper.alive and self._sampler.alive and self._collector.alive

    def summary(self) -> str:
        live = self._live_sets()
        procs = sum(sum(1 for w in s.workers if w.alive) for s in live)
        return f"{len(live)} set(s) running, {procs} process(es)"

    # --- rendering -------------------------------------------------------------------
    def _status_of(self, set_id: int) -> StatusRecord:
        with self._lock:
            pset = self._sets.get(set_id)
            ended = self._ended.get(set_id)
        if pset is not None:
            return self._status(pset)
        if ended is not None:
            return ended.status.copy()
        row = self.store.get(set_id)
        if row is None:
            raise NoSuchSet(f"no set {set_id} (see: labctl status)")
        return stored_status(row)

    def _status(self, s: ProcessSet) -> StatusRecord:
        return live_status(s, self._sampler.stats.cache)


def _members(sets: list[ProcessSet]) -> Members:
    return {s.spec.id: {w.pid for w in s.workers if w.alive} for s in sets}


def _needs_stop(s: ProcessSet) -> bool:
    """Live, or failed with processes and resources not wound up yet."""
    return s.live or (s.state == State.FAILED and bool(s.workers) and s.stopped_at is None)
