"""Status answers served from a snapshot: every set's status object serialised once per
generation, shared by every client.

A generation ends at each sampler tick that sampled a live set and at each state change
(a set spawned, changed state, lost a process, ended). While clients ask (one did in the
last :data:`KEEP_WARM` seconds), the sampler builds the next snapshot itself right after
its tick (one JSON fragment per set, and the whole answer joined from them), so a status
call only hands out the text already built: N clients cost N socket writes, not N
rebuilds, and none of them waits for a build. After a state change, or when nobody asked
lately, the first call of the new generation builds it. No snapshot is built while
nobody asks.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger("labd.snapshot")
KEEP_WARM = 2.0  # seconds after a status call during which each tick builds the snapshot


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

    def __init__(
        self, build: Callable[[], dict[int, str]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._build = build
        self._clock = clock
        self._building = threading.Lock()  # one build at a time; the others wait for it
        self._count = threading.Lock()
        self._generation = 0
        self._current: Snapshot | None = None
        self._asked = -math.inf  # clock() at the last get()

    @property
    def generation(self) -> int:
        return self._generation

    def invalidate(self) -> None:
        """Something changed: the next request builds a new snapshot (a build in
        progress keeps the older number it started with, or is dropped: see tick)."""
        with self._count:
            self._generation += 1

    def tick(self) -> None:
        """The sampler sampled: end the generation. If a client asked lately, build the
        next snapshot first, on the sampler's thread, while callers still get the one
        before it: no caller waits for a build."""
        if self._clock() - self._asked >= KEEP_WARM:
            self.invalidate()
            return
        with self._building:
            start = self._generation
            try:
                fragments = self._build()
            except Exception as exc:  # the next get() builds again, and says why
                log.debug("building the status snapshot: %s: %s", type(exc).__name__, exc)
                fragments = None
            with self._count:
                self._generation += 1
                if fragments is None or self._generation != start + 1:
                    return  # a state change came meanwhile: the next get() builds anew
                self._current = _snapshot(self._generation, fragments)

    def get(self) -> Snapshot:
        """The current snapshot (built now if none is current)."""
        self._asked = self._clock()
        return self._get()

    def _get(self) -> Snapshot:
        snap = self._current
        if snap is not None and snap.generation == self._generation:
            return snap
        with self._building:
            generation = self._generation
            snap = self._current
            if snap is not None and snap.generation == generation:
                return snap  # built by the caller we waited for
            snap = self._current = _snapshot(generation, self._build())
        return snap


def _snapshot(generation: int, fragments: dict[int, str]) -> Snapshot:
    return Snapshot(
        generation, fragments, "[" + ",".join(fragments[i] for i in sorted(fragments)) + "]"
    )
