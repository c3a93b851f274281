"""``shm``: an 8-byte counter in a ``multiprocessing.shared_memory`` segment.

Counters do ``counter[0] += 1`` on an int64 view of the segment (``buf.cast('q')``):
a load and a store, so concurrent counters lose increments exactly like an unlocked
``Value``. With ``lock=yes`` each increment runs under a ``multiprocessing`` Lock.
(Never write the counter with ``struct.pack_into``: a reader can then see its 8 bytes
half-written; an aligned int64 store through a cast view is atomic.)

The daemon creates the segment and is the only one that unlinks it, in ``teardown``.
Children started by labd share the daemon's resource tracker, whose registry is a set
of names: a child attaching registers the same name again (no effect) and must *not*
unregister it, or it would erase the daemon's registration (the tracker then prints a
KeyError when the daemon unlinks, and would no longer remove the segment if the daemon
were killed).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from multiprocessing.shared_memory import SharedMemory
from typing import Any

from labd import CounterContext, Mechanism, Param, PrinterContext, SetupEnv


class SharedMemoryCounter(Mechanism):
    """A counter in a named shared memory segment, attached by name in every child."""

    name = "shm"
    summary = "an int64 in multiprocessing.shared_memory; counter[0] += 1 races unless lock=yes"
    params = (
        Param(
            "lock",
            bool,
            False,
            "increment under a multiprocessing Lock (no: the load and the store of "
            "concurrent counters interleave, so increments are lost)",
        ),
    )
    messages = False

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._shm: SharedMemory | None = None
        self._counter: memoryview | None = None
        self._lock: Any = None

    # --- daemon side -------------------------------------------------------------
    def setup(self, env: SetupEnv) -> None:
        self._shm = SharedMemory(create=True, size=8)
        self._counter = _int64(self._shm)
        self._counter[0] = 0
        if self.values.get("lock", False):
            self._lock = env.context.Lock()

    def counter_args(self, index: int) -> tuple[Any, ...]:
        assert self._shm is not None
        return (self._shm.name, self._lock)

    def printer_args(self, index: int) -> tuple[Any, ...]:
        assert self._shm is not None
        return (self._shm.name,)

    def observe(self) -> int | None:
        counter = self._counter
        return None if counter is None else int(counter[0])

    def teardown(self) -> None:
        self._lock = None  # its semaphore goes with the last reference
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.release()  # close() refuses while a view of the buffer exists
        shm, self._shm = self._shm, None
        if shm is None:
            return
        shm.close()
        with suppress(FileNotFoundError):  # already gone (by hand, or systemd's RemoveIPC)
            shm.unlink()

    # --- child side --------------------------------------------------------------
    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        name, lock = args
        with _attached(name) as counter:
            if lock is None:
                for n in ctx.batches():
                    for _ in range(n):
                        counter[0] += 1
            else:
                for n in ctx.batches():
                    for _ in range(n):
                        with lock:
                            counter[0] += 1

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (name,) = args
        show = ctx.show
        with _attached(name) as counter:
            for _ in ctx.ticks(phase=0.5):
                show(counter[0])


@contextmanager
def _attached(name: str) -> Iterator[memoryview]:
    """The int64 counter of the segment ``name``, detached again on exit (never unlinked)."""
    shm = SharedMemory(name=name)
    counter = _int64(shm)
    try:
        yield counter
    finally:
        counter.release()
        shm.close()


def _int64(shm: SharedMemory) -> memoryview:
    """The segment's first 8 bytes as one int64: aligned, so loads and stores are atomic."""
    buf = shm.buf
    assert buf is not None  # None only after close()
    return buf.cast("q")
