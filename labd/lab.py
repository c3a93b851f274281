"""The core: every behaviour of labd is a method of :class:`Lab`.

The rpyc service, signals and the experiments are thin adapters over it. Lab owns the
table of sets (:mod:`labd.settable`), starts sets, and winds up those that end; reading
one set is :mod:`labd.views`, stopping sets :mod:`labd.stopping`. A stop holds a set's
own ``busy`` lock, so a second conflicting operation fails fast instead of queueing. No
method holds the table's lock while waiting for processes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from labd import __version__, capacity, launch
from labd.bounded import HookTimeout
from labd.cgroups import Containment
from labd.collector import Collector
from labd.errors import (
    LabError,
    LimitError,
    SetError,
    UsageError,
)
from labd.experiments.core import Experiments
from labd.history import History
from labd.leftovers import Tracker, end_leftovers, record_workers
from labd.manager_host import ManagerHost
from labd.mechanisms.base import Mechanism
from labd.owners import LABD, Admins, Caller, check_quota
from labd.params import COMMON_PARAMS, resolve
from labd.printlog import PrintLog
from labd.processset import ProcessSet, SetEnv, SetSpec, Worker
from labd.procstats import ProcStats
from labd.protocol import (
    MAX_PER_SET,
    MAX_PROCESSES,
    PROTOCOL_VERSION,
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
from labd.remains import clear_remains, clear_semaphores, record_semaphores
from labd.sampler import Sampler
from labd.setstatus import keep_last_figures, live_status, process_records
from labd.settable import Ended, SetTable
from labd.snapshot import Snapshots
from labd.statedir import lock_state_dir, make_state_dir
from labd.stopping import Stopper
from labd.stopplan import StopTimes
from labd.views import Views

log = logging.getLogger("labd.lab")
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


def forkserver_preload(registry: Registry) -> list[str]:
    """What the forkserver preloads: labd.worker, the mechanisms that loaded (after
    ``registry.load_all()``), and last the freeze of it all."""
    return [*PRELOAD, *registry.modules(), FREEZE]


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
        containment: Containment | None = None,
    ) -> None:
        self.state_dir = state_dir
        #: a cgroup per set where the host delegates one (made by the daemon, which
        #: moves itself into it first), else process groups: labd.cgroups
        self.containment = containment if containment is not None else Containment()
        make_state_dir(state_dir)
        self._state_lock = lock_state_dir(state_dir)
        self.registry = registry if registry is not None else Registry()
        self._clock = clock  # the wall clock, for display; durations are monotonic
        self.store = store if store is not None else History.open(state_dir, clock=clock)
        self.limits = limits
        self._on_change = on_change
        self._table = SetTable()
        self.started_at = clock()
        self.address = ""
        self.admins = Admins()  # who besides root and labd's user may stop any set
        self.worker_nice = 0  # added to the niceness of the workers of sets started now
        self._contexts: dict[str, multiprocessing.context.BaseContext] = {}
        clear_remains(runtime_dir or state_dir)
        private = (runtime_dir or state_dir) / f"manager-{os.getpid()}"
        # the Manager server is forked by the forkserver, and watched through a pidfd
        # of its own, so that the forkserver dying (killed, or a fork failing at the
        # process limit) costs no running set: labd.manager_host
        self.manager = ManagerHost(private, self._context("forkserver"), self._manager_died)
        self._tracker = Tracker()
        self._reaper = Reaper(self._worker_exited)
        self._collector = Collector()
        self._stats = ProcStats()
        self._worker_bytes = capacity.DEFAULT_WORKER_BYTES  # measured at each spawn
        self._snapshots = Snapshots(self._fragments)
        self._sampler = Sampler(self._live_sets, self.store.add_samples, self._deadline)
        self._sampler.on_tick = self._snapshots.tick
        self._sampler.stats = self._stats
        self.views = Views(self._table, self.store, self._stats, self._log_path)
        self._stopper = Stopper(
            self._table, self.store, self._tracker, limits.stop, self._end, self.views.status_of
        )
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
        clear_semaphores(self.state_dir)  # its dead predecessor's, now its workers are gone
        self.store.start()
        # Validate every plugin now, then let the forkserver
        # preload only those that loaded: children start warm, and a plugin
        # that raises at import cannot take the forkserver down.
        self.registry.load_all()
        forkserver = self._context("forkserver")
        forkserver.set_forkserver_preload(forkserver_preload(self.registry))
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
        with self._table.lock:
            self._table.closing = True
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
            "containment": self.containment.kind,
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
        return snap.select(
            ids, lambda i: json.dumps(self.views.status_of(i), separators=(",", ":"))
        )

    @property
    def snapshot_generation(self) -> int:
        """Grows at each sampler tick and state change: status text is rebuilt then."""
        return self._snapshots.generation

    def _fragments(self) -> dict[int, str]:
        live, ended = self._table.all()
        out = {e.status["id"]: e.text for e in ended}
        for s in live:
            out[s.spec.id] = json.dumps(live_status(s), separators=(",", ":"))
        return out

    def inspect(self, set_id: int) -> InspectRecord:
        return self.views.inspect(set_id)

    def explain(self, set_id: int) -> dict[str, Any]:
        return self.views.explain(set_id)

    def tail(self, set_id: int, after: int = 0, limit: int = 100) -> TailRecord:
        return self.views.tail(set_id, after, limit)

    def tallies(self, set_id: int) -> dict[str, Any]:
        return self.views.tallies(set_id)

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
        launchers = launch.launchers_for(need)  # processes too: the machine holds them
        capacity.check(need, self._worker_bytes, capacity.probe(), launchers)
        warnings = []
        if values["start_method"] == "fork":
            warnings.append(FORK_WARNING)
            log.warning("set uses %s", FORK_WARNING)
        pset = self._reserve(SetSpec(0, mechanism, counters, values, caller.owner), cls)
        error: Exception | None = None
        try:
            pset.cgroup = self.containment.make(pset.spec.id)
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
                self._stopper.quietly(pset)
            else:
                pset.release()
                self._end(pset)
        if error is not None:
            raise SetError(f"set {pset.spec.id} failed to start: {error}") from None
        pids = [w.pid for w in pset.workers]
        record_workers(self.store, pset.spec.id, [*pids, *pset.launcher_pids])
        record_semaphores(self.state_dir)
        self._worker_bytes = capacity.worker_bytes(pids, self._worker_bytes)
        log.info("set %d: %s %d started", pset.spec.id, mechanism, counters)
        procs = process_records(pset, self._stats, uss=False)
        return cast(SpawnRecord, {**live_status(pset), "processes": procs, "warnings": warnings})

    def _reserve(self, want: SetSpec, cls: type[Mechanism]) -> ProcessSet:
        """Check the limits, record the set and make it (holding its ``busy`` lock)."""
        mechanism, counters, values = want.mechanism, want.counters, want.values
        with self._table.lock:
            if self._table.closing:
                raise LabError("labd is shutting down")
            live = [(s.spec.owner, s.spec.footprint) for s in self._table.sets.values() if s.live]
            check_quota(want.owner, want.footprint, live, self.limits)
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
                nice=self.worker_nice,
            )
            output = PrintLog(self._log_path(set_id))
            pset = ProcessSet(
                spec, cls(values), env, output, self._state_changed, self._reaper.watch
            )
            pset.busy.acquire()  # a stop waits until the set has started
            self._table.add(pset)
        self._snapshots.invalidate()
        return pset

    def _log_path(self, set_id: int) -> Path:
        return self.state_dir / "logs" / f"set-{set_id}.log"

    # --- stop ------------------------------------------------------------------------
    def stop(
        self, ids: Sequence[int] | str, caller: Caller = LABD, until: float | None = None
    ) -> list[StatusRecord]:
        """Stop sets and wait until they are stopped (see :class:`labd.stopping.Stopper`)."""
        return self._stopper.stop(ids, caller, until)

    def _end(self, s: ProcessSet) -> None:
        """Record a set that is over, keep its final status, let go of the rest."""
        self.containment.end_set(s.spec.id)  # what its workers started, wherever it went
        if s.stopped_at is None:  # it never ran a stop: failed before any process started
            s.stopped_at = time.time()
        if s.output_done is None:  # its output never reached the collector, which closes it
            s.output.close()
        final = live_status(s)
        procs = process_records(s, self._stats, uss=False)  # exit codes, for inspect
        self.store.finish(s.spec.id, cast(StatusRecord, {**final, "processes": procs}))
        if s.metrics is not None:  # its last sample: a set shorter than the sampler's second
            self.store.add_samples([s.metrics.figures.row(s.spec.id, s.stopped_at)])
        per_counter = s.metrics.per_counter() if s.metrics is not None else []
        text = json.dumps(final, separators=(",", ":"))
        trace = s.mechanism.trace()
        ended = Ended(final, per_counter, s.output.dropped, text=text, processes=procs, trace=trace)
        self._table.end(s.spec.id, ended)
        self._snapshots.invalidate()

    # --- events ----------------------------------------------------------------------
    def _state_changed(self, s: ProcessSet, state: State, detail: str) -> None:
        self._snapshots.invalidate()
        self.store.set_state(s.spec.id, state, detail)
        if state == State.FAILED and s.workers and not s.busy.locked():
            self._stopper.in_background(s)  # reap what is left, release resources
        if self._on_change is not None:
            self._on_change(self.summary())

    def _worker_exited(self, s: ProcessSet, w: Worker) -> None:
        self._snapshots.invalidate()  # one process fewer alive
        s.worker_exited(w)

    def _deadline(self, s: ProcessSet) -> None:
        log.info("set %d: duration reached", s.spec.id)
        self._stopper.in_background(s)

    def _manager_died(self, generation: int) -> None:
        victims = [s for s in self._table.live() if s.env.manager_generation == generation]
        for s in victims:
            s.fail("the Manager server died")

    def _live_sets(self) -> list[ProcessSet]:
        return self._table.live()

    def healthy(self) -> bool:
        """For the watchdog: the background threads live and the lock is not stuck."""
        if not self._table.lock.acquire(timeout=5):
            return False
        self._table.lock.release()
        return self._reaper.alive and self._sampler.alive and self._collector.alive

    def summary(self) -> str:
        live = self._live_sets()
        procs = sum(sum(1 for w in s.workers if w.alive) for s in live)
        return f"{len(live)} set(s) running, {procs} process(es)"
