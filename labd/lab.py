"""The core: every behaviour of labd is a method of :class:`Lab`.

The rpyc service, signals and (later) anything else are thin adapters over it. Lab
guards its table of sets with one lock it owns; a stop holds a set's own ``busy`` lock,
so a second conflicting operation fails fast instead of queueing. No method holds the
Lab lock while waiting for processes.
"""

from __future__ import annotations

import json
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

from labd import __version__, capacity, explain
from labd.bounded import HookTimeout
from labd.collector import Collector
from labd.errors import (
    HistoryError,
    LabError,
    LimitError,
    NoSuchSet,
    SetBusy,
    SetError,
    UsageError,
)
from labd.experiments.core import Experiments
from labd.history import History
from labd.leftovers import Members, Tracker, end_leftovers, record_workers
from labd.manager_host import ManagerHost
from labd.mechanisms.base import Mechanism
from labd.owners import LABD, Admins, Caller, check_quota
from labd.params import COMMON_PARAMS, resolve
from labd.printlog import PrintLog, read_log_tail, within_bytes
from labd.processset import ProcessSet, SetEnv, SetSpec, Worker
from labd.procstats import WATCH_S, ProcStats
from labd.protocol import (
    MAX_PER_SET,
    MAX_PROCESSES,
    PROTOCOL_VERSION,
    TAIL_MAX_BYTES,
    WAIT_HELD_S,
    InspectRecord,
    MechanismRecord,
    MemoryRecord,
    ProcessRecord,
    SpawnRecord,
    State,
    StatusRecord,
    TailRecord,
    VersionRecord,
)
from labd.reaper import Reaper
from labd.registry import Registry
from labd.remains import clear_remains
from labd.sampler import Sampler
from labd.setstatus import (
    keep_last_figures,
    live_status,
    memory_per_worker,
    process_records,
    stored_status,
)
from labd.snapshot import Snapshots
from labd.statedir import lock_state_dir, make_state_dir
from labd.stopplan import StopPlan, StopTimes

log = logging.getLogger("labd.lab")
OUTPUT_DRAIN = 2.0  # seconds to wait for the last printer lines after a stop
FORK_WARNING = (
    "start_method=fork in a threaded daemon: a child may deadlock on a lock another "
    "thread held at the fork (use forkserver, the default, or spawn)"
)
#: what the forkserver imports once, so workers start warm (every module of labd.worker)
FREEZE = "labd.worker.frozen"  # last: freezes what the preload imported
PRELOAD = [
    "labd.worker.process",
    "labd.worker.launcher",
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
    text: str = ""  # the final status as JSON text, serialised once
    processes: list[ProcessRecord] = field(default_factory=list)  # for inspect
    trace: dict[str, Any] | None = None  # with trace=yes: what the counters recorded


@dataclass(frozen=True)
class Limits:
    per_set: int = MAX_PER_SET
    total: int = MAX_PROCESSES
    stop: StopTimes = field(default_factory=StopTimes)
    per_user: int | None = None  # processes of one owner's sets (labd --max-per-user)


class Lab:
    def __init__(
        self,
        state_dir: Path,
        *,
        registry: Registry | None = None,
        store: History | None = None,
        limits: Limits = Limits(),
        runtime_dir: Path | None = None,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = state_dir
        make_state_dir(state_dir)
        self._state_lock = lock_state_dir(state_dir)
        self.registry = registry if registry is not None else Registry()
        self._clock = clock  # the wall clock, for display; durations are monotonic
        self.store = store if store is not None else History.open(state_dir, clock=clock)
        self.limits = limits
        self._on_change = on_change
        self._lock = threading.Lock()
        self._sets: dict[int, ProcessSet] = {}  # until stopped; then in _ended
        #: sets ended in this run, by their final status alone (with per_counter for
        #: inspect): their processes, output ring and metrics are let go
        self._ended: dict[int, Ended] = {}
        self._closing = False
        self.started_at = clock()
        self.address = ""
        self.admins = Admins()  # who besides root and labd's user may stop any set
        self._contexts: dict[str, multiprocessing.context.BaseContext] = {}
        clear_remains(runtime_dir or state_dir)
        private = (runtime_dir or state_dir) / f"manager-{os.getpid()}"
        # the Manager runs in a process of labd's own (spawn), not under the forkserver,
        # so that the forkserver dying (killed, or a fork failing at the process limit)
        # costs no running set
        self.manager = ManagerHost(private, self._context("spawn"), self._manager_died)
        self._tracker = Tracker()
        self._reaper = Reaper(self._worker_exited)
        self._collector = Collector()
        self._stats = ProcStats()
        self._worker_bytes = capacity.DEFAULT_WORKER_BYTES  # measured at each spawn
        self._snapshots = Snapshots(self._fragments)
        self._sampler = Sampler(self._live_sets, self.store.add_samples, self._deadline)
        self._sampler.on_tick = self._snapshots.invalidate
        self._sampler.stats = self._stats
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
            keep_last_figures(self.store, interrupted)
        self.store.start()
        # Validate every plugin now, then let the forkserver
        # preload only those that loaded: children start warm, and a plugin
        # that raises at import cannot take the forkserver down.
        self.registry.load_all()
        forkserver = self._context("forkserver")
        forkserver.set_forkserver_preload([*PRELOAD, *self.registry.modules(), FREEZE])
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
        self.stop("all", until=None if within is None else time.monotonic() + within)
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
            "history": self.store.health(),
            "warnings": list(self.store.warnings),
        }

    def mechanisms(self) -> list[MechanismRecord]:
        return self.registry.describe()

    def status(self, ids: Sequence[int] = ()) -> list[StatusRecord]:
        result: list[StatusRecord] = json.loads(self.status_text(ids))
        return result

    def status_text(self, ids: Sequence[int] = ()) -> str:
        """The status objects of ``ids`` (all sets if empty) as one JSON array, from the
        snapshot shared by every caller (see :mod:`labd.snapshot`)."""
        snap = self._snapshots.get()
        if not ids:
            return snap.text
        return snap.select(ids, lambda i: json.dumps(self._status_of(i), separators=(",", ":")))

    @property
    def snapshot_generation(self) -> int:
        """Grows at each sampler tick and state change: status text is rebuilt then."""
        return self._snapshots.generation

    def _fragments(self) -> dict[int, str]:
        with self._lock:
            live, ended = list(self._sets.values()), list(self._ended.values())
        out = {e.status["id"]: e.text for e in ended}
        for s in live:
            out[s.spec.id] = json.dumps(self._status(s), separators=(",", ":"))
        return out

    def inspect(self, set_id: int) -> InspectRecord:
        with self._lock:
            pset = self._sets.get(set_id)
            ended = self._ended.get(set_id)
        status = self._status_of(set_id)
        try:
            row = self.store.get(set_id)
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
        lines = within_bytes(lines, TAIL_MAX_BYTES, newest=after <= 0)
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
    def spawn(
        self,
        mechanism: str,
        counters: int,
        params: Mapping[str, object],
        caller: Caller = LABD,
    ) -> SpawnRecord:
        cls = self.registry.get(mechanism)
        if type(counters) is not int or counters < 1:
            raise UsageError(f"the number of counters must be a positive integer, not {counters!r}")
        if counters > self.limits.per_set:
            raise LimitError(
                f"{counters} counters is above the limit of {self.limits.per_set} per set"
            )
        values = resolve(cls.params + COMMON_PARAMS, params, f"mechanism {mechanism!r}")
        cls.check(values)
        if values["printers"] > self.limits.per_set:
            raise LimitError(
                f"{values['printers']} printers is above the limit of {self.limits.per_set} per set"
            )
        need = counters + int(values["printers"])
        capacity.check(need, self._worker_bytes, capacity.probe())  # the machine's limits
        warnings = []
        if values["start_method"] == "fork":
            warnings.append(FORK_WARNING)
            log.warning("set uses %s", FORK_WARNING)
        pset = self._reserve(SetSpec(0, mechanism, counters, values, caller.owner), cls)
        error: Exception | None = None
        try:
            pset.start(self._collector.add)
        except (LabError, HookTimeout) as exc:  # refused by the mechanism, or a hung hook
            why = exc.message if isinstance(exc, LabError) else str(exc)
            log.error("set %d failed to start: %s", pset.spec.id, why)
            pset.fail(f"could not start: {why}")
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
        record_workers(self.store, pset.spec.id, [*pids, *pset.launcher_pids])
        self._worker_bytes = capacity.worker_bytes(pids, self._worker_bytes)
        log.info("set %d: %s %d started", pset.spec.id, mechanism, counters)
        procs = process_records(pset, self._stats, uss=False)
        return cast(SpawnRecord, {**self._status(pset), "processes": procs, "warnings": warnings})

    def _reserve(self, want: SetSpec, cls: type[Mechanism]) -> ProcessSet:
        """Check the limits, record the set and make it (holding its ``busy`` lock)."""
        mechanism, counters, values = want.mechanism, want.counters, want.values
        with self._lock:
            if self._closing:
                raise LabError("labd is shutting down")
            live = [(s.spec.owner, s.spec.processes) for s in self._sets.values() if s.live]
            check_quota(want.owner, want.processes, live, self.limits)
            set_id = self.store.new_set(
                mechanism,
                str(values["name"]),
                counters,
                int(values["printers"]),
                values,
                owner=want.owner,
            )
            spec = SetSpec(set_id, mechanism, counters, values, want.owner)
            env = SetEnv(
                set_id,
                counters,
                spec.printers,
                self._context(str(values["start_method"])),
                self.manager.get,
                clock=self._clock,
            )
            output = PrintLog(self._log_path(set_id))
            pset = ProcessSet(
                spec, cls(values), env, output, self._state_changed, self._reaper.watch
            )
            pset.busy.acquire()  # a stop waits until the set has started
            self._sets[set_id] = pset
        self._snapshots.invalidate()
        return pset

    def _log_path(self, set_id: int) -> Path:
        return self.state_dir / "logs" / f"set-{set_id}.log"

    # --- stop ------------------------------------------------------------------------
    def stop(
        self, ids: Sequence[int] | str, caller: Caller = LABD, until: float | None = None
    ) -> list[StatusRecord]:
        """Stop sets and wait until they are stopped; ``"all"`` stops every live set
        ``caller`` may stop (an admin's: all; anyone else's: their own). ``until``, a
        monotonic instant, bounds the whole stop (as at shutdown)."""
        targets, mine, held = self._claim(ids, caller)
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
        self, ids: Sequence[int] | str, caller: Caller
    ) -> tuple[list[int], list[ProcessSet], list[ProcessSet]]:
        """The targets, the live ones now ours to stop, and (for "all") those another
        operation holds, which the caller waits for."""
        mine: list[ProcessSet] = []
        held: list[ProcessSet] = []
        with self._lock:
            if ids == "all":
                targets = sorted(
                    i
                    for i, s in self._sets.items()
                    if _needs_stop(s) and caller.may_stop(s.spec.owner)
                )
            else:
                assert not isinstance(ids, str), "only 'all' is a word here"
                targets = list(ids)
                for i in targets:
                    if i not in self._sets and self.store.get(i) is None:
                        raise NoSuchSet(f"no set {i} (see: labctl status)")
                    if i in self._sets and _needs_stop(self._sets[i]):
                        caller.check_stop(i, self._sets[i].spec.owner)
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
        procs = process_records(s, self._stats, uss=False)  # exit codes, for inspect
        self.store.finish(s.spec.id, cast(StatusRecord, {**final, "processes": procs}))
        if s.metrics is not None:  # its last sample: a set shorter than the sampler's second
            self.store.add_samples([s.metrics.figures.row(s.spec.id, s.stopped_at)])
        per_counter = s.metrics.per_counter() if s.metrics is not None else []
        with self._lock:
            text = json.dumps(final, separators=(",", ":"))
            trace = s.mechanism.trace()
            self._ended[s.spec.id] = Ended(
                final, per_counter, s.output.dropped, text=text, processes=procs, trace=trace
            )
            del self._sets[s.spec.id]
        self._snapshots.invalidate()

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
        self._snapshots.invalidate()
        self.store.set_state(s.spec.id, state, detail)
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
        self._snapshots.invalidate()  # one process fewer alive
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
        return live_status(s)


def _members(sets: list[ProcessSet]) -> Members:
    return {s.spec.id: {w.pid for w in s.workers if w.alive} for s in sets}


def _needs_stop(s: ProcessSet) -> bool:
    """Live, or failed with processes and resources not wound up yet."""
    return s.live or (s.state == State.FAILED and bool(s.workers) and s.stopped_at is None)
