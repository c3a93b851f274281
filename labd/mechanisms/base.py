"""The mechanism plugin contract: everything a plugin author implements.

A mechanism shares a counter between processes in one way. labd creates one instance
per process set, in the daemon; the instance owns the set's IPC resources. Counters and
printers run in child processes and receive only what :meth:`Mechanism.counter_args`
and :meth:`Mechanism.printer_args` hand them, so that each child holds just its own
ends (this is what makes a pipe's EOF mean "all writers are gone").

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

Register a mechanism as an entry point in the group ``labd.mechanisms``::

    [project.entry-points."labd.mechanisms"]
    shm = "my_package.module:SharedMemoryCounter"

The entry point's name must equal the class's ``name``. ``counter`` and ``printer`` are
classmethods that run in the children; they must be importable module-level code.
"""

from __future__ import annotations

import multiprocessing.context
from collections.abc import Mapping
from multiprocessing.managers import SyncManager
from typing import Any, ClassVar, Protocol

from labd.params import Param
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
    #: (an optional dependency imported lazily, e.g. ``("redis",)``)
    preload: ClassVar[tuple[str, ...]] = ()

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
        """The shared value now (non-message mechanisms); None for message mechanisms."""
        return None

    def figures(self) -> dict[str, Any]:
        """The mechanism's own figures for status (e.g. retries), as last sampled by
        :meth:`observe`; kept after :meth:`teardown`. Cheap: no I/O here."""
        return {}

    def release_printers(self) -> None:
        """Counters have exited: make printers finish once they drained what was sent."""

    def teardown(self) -> None:
        """Release the set's resources. Must not raise if setup failed half-way."""

    # --- child side --------------------------------------------------------------
    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        """The counter loop: ``for n in ctx.batches(): ...n increments...``."""
        raise NotImplementedError

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        """The printer loop: ``ctx.show(v)`` per tick, or ``ctx.received(t)`` per message."""
        raise NotImplementedError

    # --- description ---------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "summary": cls.summary,
            "messages": cls.messages,
            "params": [p.describe() for p in cls.params],
        }
