"""Status answers served from a snapshot: every set's status object serialised once per
generation, shared by every client.

A generation ends at each sampler tick that changed figures and at each state change
(a set spawned, changed state, lost a process, ended). The first status call of a new
generation builds the snapshot (one JSON fragment per set, and the whole answer
joined from them); every other call until the next generation gets the same text, so N
clients cost N socket writes, not N rebuilds. No snapshot is built while nobody asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    generation: int
    fragments: Mapping[int, str]  # set id -> its status object as JSON text
    text: str  # every set's, as one JSON array, ordered by id

    def select(self, ids: Sequence[int], fallback: Callable[[int], str]) -> str:
        """The JSON array of the sets ``ids``; ``fallback`` serialises one not held here
        (an earlier run's, from the store) or raises for an unknown id."""
        parts = [self.fragments.get(i) or fallback(i) for i in ids]
        return "[" + ",".join(parts) + "]"


class Snapshots:
    """The current :class:`Snapshot`, built on demand at most once per generation."""

    def __init__(self, build: Callable[[], dict[int, str]]) -> None:
        self._build = build
        self._building = threading.Lock()  # one build at a time; the others wait for it
        self._count = threading.Lock()
        self._generation = 0
        self._current: Snapshot | None = None

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """Something changed: the next request builds a new snapshot (a build in
        progress keeps the older number it started with)."""
        with self._count:
            self._generation += 1

    def get(self) -> Snapshot:
        snap = self._current
        if snap is not None and snap.generation == self._generation:
            return snap
        with self._building:
            generation = self._generation
            snap = self._current
            if snap is not None and snap.generation == generation:
                return snap  # built by the caller we waited for
            fragments = self._build()
            text = "[" + ",".join(fragments[i] for i in sorted(fragments)) + "]"
            snap = self._current = Snapshot(generation, fragments, text)
        return snap
