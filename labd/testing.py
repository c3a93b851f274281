"""Test helpers for labd and for mechanism plugins (shipped, as httpx ships a mock).

- :class:`FakeMechanism`: a small exact mechanism (a ``RawValue`` incremented under a
  ``Lock``), to drive labd in a test without depending on a real one. Register it with
  ``Registry.of(FakeMechanism)`` in process, or in a real labd with
  ``LABD_EXTRA_MECHANISMS="fake=labd.testing:FakeMechanism"``.
- :func:`check_accounting`: the invariant every correct set keeps, live and stopped.
- Leak checks: :func:`marked_processes` (processes carrying an environment marker),
  :func:`running` and :func:`wait_gone` (processes still running), :func:`shm_entries`,
  :func:`shm_mapped` and :class:`ShmWatch` (``/dev/shm`` segments).

Failures are plain ``AssertionError`` with the record in the message, so these work
under pytest, unittest or a script; nothing here imports pytest. psutil is imported
only by the functions that need it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from labd.mechanisms.base import Mechanism, SetupEnv
from labd.protocol import FINISHED_STATES
from labd.worker.contexts import CounterContext, PrinterContext

if TYPE_CHECKING:
    import psutil

SHM = "/dev/shm"


# --- a fake mechanism ------------------------------------------------------------------
class FakeMechanism(Mechanism):
    """An exact shared counter: every increment under a lock, so ``lost`` stays 0."""

    name = "fake"
    summary = "a RawValue incremented under a Lock (labd.testing)"
    messages = False

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._value: Any = None
        self._lock: Any = None

    def setup(self, env: SetupEnv) -> None:
        self._value = env.context.RawValue("q", 0)
        self._lock = env.context.Lock()

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return (self._value, self._lock)

    def printer_args(self, index: int) -> tuple[Any, ...]:
        return (self._value,)

    def observe(self) -> int | None:
        return None if self._value is None else int(self._value.value)

    def teardown(self) -> None:
        self._value = None
        self._lock = None

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        value, lock = args
        ctx.increment(value, lock)

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (value,) = args
        for _ in ctx.ticks(phase=0.5):
            ctx.show(value.value)


# --- the accounting invariant ------------------------------------------------------------
def check_accounting(record: Mapping[str, Any], per_counter: Sequence[int] | None = None) -> None:
    """Check a status (or inspect) record against labd's accounting.

    Always: every count is non-negative and ``lost == attempted - value - in_flight -
    corrupt`` (a garbled message arrived: it is corrupt, not also lost).
    Once the set has ended (stopped, failed, interrupted): nothing is in flight, and
    each counter's attempts (``per_counter``, from the argument or the inspect record)
    add up to ``attempted``. Raises ``AssertionError`` naming the broken rule.
    """
    where = f"set {record.get('id')} ({record.get('mechanism')}, {record.get('state')}): "
    counts = {k: record[k] for k in ("value", "attempted", "lost", "in_flight", "corrupt")}
    negative = [k for k, v in counts.items() if v < 0]
    _require(not negative, where + f"negative {', '.join(negative)} in {counts}")
    value, attempted, lost, in_flight, corrupt = counts.values()
    _require(
        lost == attempted - value - in_flight - corrupt,
        where + f"lost {lost} != attempted {attempted} - value {value} - in_flight "
        f"{in_flight} - corrupt {corrupt}",
    )
    if record.get("state") not in FINISHED_STATES:
        return
    _require(in_flight == 0, where + f"{in_flight} still in flight after the set ended")
    tallies = per_counter if per_counter is not None else record.get("per_counter")
    if tallies is not None:
        _require(
            sum(tallies) == attempted,
            where + f"per_counter {list(tallies)} sums to {sum(tallies)}, not {attempted}",
        )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


# --- leak checks -------------------------------------------------------------------------
class HasPid(Protocol):
    @property
    def pid(self) -> int: ...


def marked_processes(var: str, value: str) -> list[psutil.Process]:
    """Running processes (other than this one) whose environment has ``var=value``.

    Put the marker in the environment of what a test starts (it is inherited); only
    the environment a process was exec'd with is visible, so a marker set later in a
    forked child (``os.environ[...] = ...``) is not found.
    """
    import psutil

    out = []
    me = os.getpid()
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        with contextlib.suppress(psutil.Error):
            if p.environ().get(var) == value and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def running(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running: not exited (a zombie has exited), not a reused pid."""
    import psutil

    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds until these have exited; those still running."""
    deadline = time.monotonic() + timeout
    while (left := running(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def shm_entries() -> set[str]:
    """The names in /dev/shm now."""
    try:
        return set(os.listdir(SHM))
    except FileNotFoundError:
        return set()


def shm_mapped(procs: Iterable[HasPid]) -> set[str]:
    """The /dev/shm entries these processes map (named, or unlinked already)."""
    seen: set[str] = set()
    for p in procs:
        try:
            with open(f"/proc/{p.pid}/maps") as f:
                maps = f.read()
        except OSError:
            continue
        for line in maps.splitlines():
            at = line.find(SHM + "/")
            if at >= 0:
                seen.add(line[at + len(SHM) + 1 :].removesuffix(" (deleted)").strip())
    return seen


class ShmWatch(threading.Thread):
    """Which /dev/shm entries this process and its descendants have mapped, scanned in
    the background. Other people may use /dev/shm on the same machine, so a new entry
    left at the end is ours only if one of our processes was seen holding it::

        before = shm_entries(); watch = ShmWatch(); watch.start()
        ...  # the test
        watch.stop(); leaked = (shm_entries() - before) & watch.seen
    """

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(name="shm-watch", daemon=True)
        self.every = every
        self.seen: set[str] = set()
        self._quit = threading.Event()

    def run(self) -> None:
        while not self._quit.wait(self.every):
            self.scan()

    def scan(self) -> None:
        import psutil

        try:
            me = psutil.Process()
            procs = [me, *me.children(recursive=True)]
        except psutil.Error:
            return
        self.seen |= shm_mapped(procs)

    def stop(self) -> None:
        self._quit.set()
        self.join(5)
        self.scan()
