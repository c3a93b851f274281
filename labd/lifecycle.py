"""One set's lifecycle: its states, the changes allowed between them, and its locks.

The states are :class:`labd.protocol.State`. Every change of a set's state goes through
:meth:`Lifecycle.move`, which checks it against :data:`TRANSITIONS`::

    starting ──> running ──> degraded
       │  │         │  │        │  │
       │  └────┬────┘  └───┬────┘  │
       │       v           v       │
       │    failed ──> stopping <──┘
       │       ^        │    │
       └───────┴────────┘    └──> stopped

    (any live state) ──> interrupted    only in the store, when labd starts again

A failed set that still has processes is wound up through ``stopping`` and ends
``failed`` again; a stop ends ``stopped``. ``stopped``, ``failed`` (once wound up) and
``interrupted`` are final.

Lock order. Three locks guard a set, and five kinds of thread take them (rpyc client
threads, the reaper, the sampler, the Manager watch, background stops). Take them in
this order, never the other way round:

1. ``ProcessSet.busy``: a start or a stop in progress. Held for the whole operation;
   a second operation fails fast (``acquire(blocking=False)``), except ``stop all``,
   which waits for it while holding nothing else.
2. ``Lifecycle.lock`` (re-entrant): the set's state, checked and changed as one step.
   The change callback runs under it (it writes the store, which has its own leaf lock,
   and tells systemd, which takes ``SetTable.lock``).
3. ``SetTable.lock``: the table of sets. A leaf: nothing is waited for under it; it only
   ever *tries* ``busy`` (non-blocking) and reads states without their lock.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterable

from labd.protocol import LIVE_STATES, State

log = logging.getLogger("labd.lifecycle")

S = State
#: state -> the states it may change to (contract of the set's life, checked in move())
TRANSITIONS: dict[State, frozenset[State]] = {
    S.STARTING: frozenset({S.RUNNING, S.FAILED, S.STOPPING, S.INTERRUPTED}),
    S.RUNNING: frozenset({S.DEGRADED, S.FAILED, S.STOPPING, S.INTERRUPTED}),
    S.DEGRADED: frozenset({S.DEGRADED, S.FAILED, S.STOPPING, S.INTERRUPTED}),
    S.STOPPING: frozenset({S.STOPPED, S.FAILED, S.INTERRUPTED}),
    S.FAILED: frozenset({S.STOPPING}),
    S.STOPPED: frozenset(),
    S.INTERRUPTED: frozenset(),
}


def allowed(old: State, new: State) -> bool:
    return new in TRANSITIONS[old]


def check_path(states: Iterable[str]) -> list[str]:
    """The changes in a recorded sequence of states that the table forbids (for tests
    and for checking a set's recorded events)."""
    seq = [State(s) for s in states]
    return [f"{a} -> {b}" for a, b in itertools.pairwise(seq) if not allowed(a, b)]


class Lifecycle:
    """A set's state. Changed only through :meth:`move`, under :attr:`lock`."""

    def __init__(self, name: str, on_change: Callable[[State, str], None]) -> None:
        self.name = name
        self.state = State.STARTING
        self.error: str | None = None  # why it is degraded or failed
        self.failed_before_stop = False  # a stop of a failed set ends it failed
        self.lock = threading.RLock()
        self._on_change = on_change

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def move(self, new: State, detail: str = "", *, only_from: Iterable[State] = ()) -> bool:
        """Change to ``new`` if the table allows it (and, with ``only_from``, only from
        one of those states), as one step; False if the set was elsewhere. A change the
        table forbids is a bug: it is logged and refused."""
        with self.lock:
            sources = tuple(only_from)
            if sources and self.state not in sources:
                return False
            if not allowed(self.state, new):
                log.error("%s: refused an illegal change %s -> %s", self.name, self.state, new)
                return False
            if new == State.STOPPING and self.state == State.FAILED:
                self.failed_before_stop = True
            self.state = new
            if new in (State.DEGRADED, State.FAILED) and detail:
                self.error = detail
            self._on_change(new, detail)
            return True

    def final(self) -> State:
        """The state a stop ends in."""
        return State.FAILED if self.failed_before_stop else State.STOPPED
