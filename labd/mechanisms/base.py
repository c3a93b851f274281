"""The mechanism plugin contract: everything a plugin author implements.

A mechanism shares a counter between processes in one way. labd creates one instance
per process set, in the daemon; the instance owns the set's IPC resources. Counters and
printers run in child processes and receive only what :meth:`Mechanism.counter_args`
and :meth:`Mechanism.printer_args` hand them, so that each child holds just its own
ends (this is what makes a pipe's EOF mean "all writers are gone").

Where each part runs:

* In labd (the daemon, a threaded process): ``__init__``, :meth:`~Mechanism.setup`,
  ``counter_args``/``printer_args``, :meth:`~Mechanism.started`,
  :meth:`~Mechanism.observe`, :meth:`~Mechanism.release_printers` and
  :meth:`~Mechanism.teardown`. They must not block for long: labd serves clients on
  other threads meanwhile.
* In the workers (one process each, started by the set's multiprocessing context,
  ``forkserver`` by default): the classmethods :meth:`~Mechanism.counter` and
  :meth:`~Mechanism.printer`, with a context from :mod:`labd.worker.contexts`. They
  see no instance state: only their arguments and ``ctx.values`` (the parameters).
  The module defining the class is preloaded by the forkserver (unless
  :attr:`~Mechanism.forkserver_preload` is False), so keep its imports light and never
  start threads or processes at import.

Lifecycle, driven by labd::

    m = Mechanism(values)           # values: own and common parameters, checked
    m.setup(env)                    # daemon: create resources (env.context is the set's
                                    #   multiprocessing context; env.manager() the Manager)
    start printers with printer_args(j), then counters with counter_args(i)
    m.started()                     # daemon: drop copies the daemon must not hold
    ...  m.observe() sampled in the background (non-message mechanisms)
    stop: counters are told to stop and exit
    m.release_printers()            # daemon: let printers finish once drained
    printers are told to stop and exit
    m.teardown()                    # daemon: release resources

Threads in labd: :meth:`~Mechanism.observe` is called by labd's sampler thread (ten
times a second) and once more by the thread that stops the set, for the final figures;
never two at a time, and never after that final call. ``setup``, ``started``,
``release_printers`` and ``teardown`` run on the thread that starts or stops the set
(a client's connection, a background stop when ``duration`` is reached or the set
failed, or labd's own shutdown): each set is started and stopped by one thread at a time.

The counter loop is ``for n in ctx.batches(): ...do n increments...`` and must return
soon after ``batches()`` ends (the set is stopping): labd waits 3 s (longer while the
set still makes progress), then sends SIGTERM, then SIGKILL. A message counter loops
over ``batches, stamp = ctx.sends()`` instead and stamps each message with ``stamp()``:
paced, the tick it was due at (a late counter catches up its missed ticks), so a stall
shows as latency.

Printers come in two kinds, chosen by :attr:`Mechanism.messages`:

* ``messages = False`` (a shared value): :meth:`observe` returns the value, and the
  printer loop is ``for _ in ctx.ticks(): ctx.show(read the value)``; it ends when
  ``ticks()`` ends.
* ``messages = True`` (each increment is a message): the value of the set is what the
  printers received, so each printer must call ``ctx.received(sent_ns)`` (or
  ``ctx.received_many``) for every valid message and ``ctx.corrupt()`` for every
  garbled one, and must drain every message the counters sent before it returns:
  a message never received counts as lost. ``observe()`` is not called. Such a
  printer ends on an end-of-stream the mechanism itself provides: a sentinel per
  printer put by :meth:`release_printers` behind every message (the queue), or EOF
  once every write end is closed (the pipe: the daemon closes its copies in
  :meth:`started`, the counters' copies close as they exit). ``ctx.wake`` becomes
  readable when printers are told to stop, after ``release_printers``; a printer
  still running 5 s later (longer while it makes progress) is terminated. A message
  printer prints nothing itself: the first printer's context prints the set's total
  at each tick.

Register a mechanism as an entry point in the group ``labd.mechanisms``::

    [project.entry-points."labd.mechanisms"]
    shm = "my_package.module:SharedMemoryCounter"

The entry point's name must equal the class's ``name``. ``counter`` and ``printer`` are
classmethods (not staticmethods: labd refuses those at load) defined in an importable
module. :mod:`labd.testing` has a fake mechanism, the accounting invariant to check a
set against, and leak checks for tests of a plugin.
"""

from __future__ import annotations

import multiprocessing.context
from collections.abc import Mapping
from multiprocessing.managers import SyncManager
from typing import Any, ClassVar, Protocol

from labd.params import Param
from labd.protocol import MechanismRecord
from labd.worker.contexts import CounterContext, PrinterContext


class SetupEnv(Protocol):
    """What the daemon offers a mechanism while it sets up a set."""

    set_id: int
    counters: int
    printers: int

    @property
    def context(self) -> multiprocessing.context.BaseContext:
        """The set's multiprocessing context (its ``start_method``)."""

    def manager(self) -> SyncManager:
        """labd's Manager server; using it ties the set to it (the set fails if it dies)."""


class Mechanism:
    """Base class of every mechanism. Override the class attributes and the hooks."""

    #: the name users type (``spawn NAME N``); equal to the entry point's name
    name: ClassVar[str] = ""
    #: one line for ``labctl mechanisms``
    summary: ClassVar[str] = ""
    #: the mechanism's own parameters (the common ones are added by labd)
    params: ClassVar[tuple[Param, ...]] = ()
    #: True: the value is what printers received (in flight and latency apply);
    #: False: :meth:`observe` reads the shared value
    messages: ClassVar[bool] = False
    #: modules the workers need, for the forkserver to preload when they are installed
    #: (an optional dependency imported lazily)
    preload: ClassVar[tuple[str, ...]] = ()
    #: False: the forkserver preloads neither the class's module nor ``preload``; each
    #: set's launcher imports them once. For a heavy dependency: a fork costs with the
    #: size of the process forked, for every set (redis-py: 10 MB, ~0.7 ms a fork here)
    forkserver_preload: ClassVar[bool] = True

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values: dict[str, Any] = dict(values)

    # --- daemon side -------------------------------------------------------------
    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        """Refuse values that can never work, before the set exists (raise a LabError);
        checks that need the set's resources belong in :meth:`setup`."""

    def setup(self, env: SetupEnv) -> None:
        """Create the set's IPC resources (in the daemon)."""

    def counter_args(self, index: int) -> tuple[Any, ...]:
        """The picklable resources counter ``index`` receives."""
        return ()

    def printer_args(self, index: int) -> tuple[Any, ...]:
        """The picklable resources printer ``index`` receives."""
        return ()

    def started(self) -> None:
        """All children started: close what the daemon must not keep (e.g. write ends)."""

    def observe(self) -> int | None:
        """The shared value now (non-message mechanisms); None for message mechanisms.

        Called on labd's sampler thread, never concurrently with itself; it must be
        quick (no waiting on workers). If it raises, the last value seen stands."""
        return None

    def trace(self) -> dict[str, Any] | None:
        """With ``trace=yes`` (opt in: see :mod:`labd.mechanisms.observed`): each
        counter's traced increments, ``{"depth": D, "records": [[(t_read_ns,
        value_read, t_write_ns), ...] per counter]}``; None otherwise. Still answers
        after :meth:`teardown` (labd explains stopped sets)."""
        return None

    def figures(self) -> dict[str, Any]:
        """The mechanism's own figures for status (e.g. retries), as last sampled by
        :meth:`observe`; kept after :meth:`teardown`. Cheap: no I/O here."""
        return {}

    def release_printers(self) -> None:
        """Counters have exited: make printers finish once they drained what was sent
        (message mechanisms: put each printer's end-of-stream behind every message)."""

    def teardown(self) -> None:
        """Release the set's resources, once every worker has ended (or was killed).

        Runs on the thread that stops the set, after the final :meth:`observe`. Must
        not raise if setup failed half-way, and must be safe to call twice."""

    # --- child side --------------------------------------------------------------
    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        """The counter loop, in a worker: ``for n in ctx.batches(): ...n increments...``;
        ``args`` are what :meth:`counter_args` gave. Return once ``batches()`` ends."""
        raise NotImplementedError

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        """The printer loop, in a worker: ``ctx.show(v)`` per tick, or, with
        ``messages = True``, ``ctx.received(sent_ns)`` per message until the
        mechanism's end-of-stream (see the module docstring)."""
        raise NotImplementedError

    # --- description ---------------------------------------------------------------
    @classmethod
    def describe(cls) -> MechanismRecord:
        return {
            "name": cls.name,
            "summary": cls.summary,
            "messages": cls.messages,
            "params": [p.describe() for p in cls.params],
        }
