"""What the REPL knows of the daemon between two keystrokes: one snapshot, swapped whole.

The poller thread writes it; the completer, the toolbar and the prompt read it. Readers
get an immutable :class:`Snapshot`, so they never see half an update and never wait on
the network.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from labd.protocol import LIVE_STATES, MechanismRecord, StatusRecord


@dataclass(frozen=True)
class Snapshot:
    """The daemon as last seen: its sets and mechanisms, and whether it answers."""

    connected: bool = False
    sets: tuple[StatusRecord, ...] = ()
    mechanisms: tuple[MechanismRecord, ...] = ()
    #: the groups this user started (``spawn ... --on``), as groups.json lists them
    groups: tuple[dict[str, Any], ...] = ()
    updated: float | None = None  # time.monotonic() of the last status()
    losses: int = 0  # how many times a connection to labd was lost
    problem: str = ""  # why it is not connected (one line)
    expect_down: bool = False  # the user shut labd down: its going is no news

    @property
    def live_sets(self) -> tuple[StatusRecord, ...]:
        return tuple(s for s in self.sets if s.get("state") in LIVE_STATES)

    def mechanism(self, name: str) -> MechanismRecord | None:
        return next((m for m in self.mechanisms if m.get("name") == name), None)


class LiveCache:
    """A :class:`Snapshot` behind a lock; ``update`` replaces it with some fields changed."""

    def __init__(self, first: Snapshot | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = first or Snapshot()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def update(self, **changes: Any) -> Snapshot:
        with self._lock:
            self._snapshot = replace(self._snapshot, **changes)
            return self._snapshot

    def lost(self, problem: str) -> Snapshot:
        """Record a lost connection (counted, so the REPL knows to reconnect too)."""
        with self._lock:
            self._snapshot = replace(
                self._snapshot, connected=False, problem=problem, losses=self._snapshot.losses + 1
            )
            return self._snapshot
