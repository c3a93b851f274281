"""Plugin code under a time bound: a hook that hangs costs its set, never labd.

A mechanism's daemon-side hooks (``setup``, ``release_printers``, ``teardown``,
``observe``) are third-party code running in labd. :func:`call_within` runs one on a
thread of its own and waits for it at most a given time: a hook still running then is
left behind (a daemon thread: it cannot hold labd's exit) and the caller goes on.
:class:`Observer` does the same for ``observe()``, which the sampler calls ten times a
second, with one thread per set instead of one per call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
#: bounds of a mechanism's hooks, in seconds
SETUP_S = 10.0
TEARDOWN_S = 5.0
OBSERVE_S = 0.5


class HookTimeout(Exception):
    """A hook did not return in time (args: the hook's name, the bound in seconds)."""

    def __str__(self) -> str:
        name, seconds = self.args
        return f"{name} did not return within {seconds:g} s"


class _Call(Generic[T]):
    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._fn()
        except BaseException as exc:  # SystemExit, KeyboardInterrupt too: the hook's, not ours
            self.error = exc
        finally:
            self.done.set()

    def outcome(self) -> T:
        if self.error is not None:
            if isinstance(self.error, Exception):
                raise self.error
            raise RuntimeError(f"{type(self.error).__name__}: {self.error}")
        return self.result  # type: ignore[return-value]


def call_within(fn: Callable[[], T], seconds: float, name: str) -> T:
    """``fn()``, or :class:`HookTimeout` once ``seconds`` passed (``fn`` runs on)."""
    call = _Call(fn)
    threading.Thread(target=call.run, name=f"hook {name}", daemon=True).start()
    if not call.done.wait(max(0.0, seconds)):
        raise HookTimeout(name, seconds)
    return call.outcome()


class Observer:
    """Calls ``observe`` on its own thread, one call at a time, each awaited at most
    ``seconds``. While a call hangs, :meth:`__call__` raises :class:`HookTimeout` at once
    (no second call piles up); once it returns, observing resumes."""

    def __init__(
        self,
        observe: Callable[[], int | None],
        seconds: float = OBSERVE_S,
        on_hang: Callable[[HookTimeout], None] | None = None,
    ) -> None:
        self._observe = observe
        self._on_hang = on_hang
        self._hung = False
        self._seconds = seconds
        self._lock = threading.Lock()
        self._pending: _Call[int | None] | None = None
        self._wake = threading.Condition(self._lock)
        self._closed = False
        self._thread: threading.Thread | None = None

    def __call__(self) -> int | None:
        with self._lock:
            if self._closed:
                raise HookTimeout("observe()", 0.0)
            call = self._pending
            if call is not None and not call.done.is_set():
                raise HookTimeout("observe()", self._seconds)  # still hung
            call = self._pending = _Call(self._observe)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="observe", daemon=True)
                self._thread.start()
            self._wake.notify()
        if not call.done.wait(self._seconds):
            exc = HookTimeout("observe()", self._seconds)
            if not self._hung and self._on_hang is not None:
                self._hung = True
                self._on_hang(exc)
            raise exc
        return call.outcome()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (self._pending is None or self._pending.done.is_set()):
                    self._wake.wait()
                if self._closed:
                    return
                call = self._pending
            assert call is not None
            call.run()

    def close(self) -> None:
        """Let the thread end (at once, or when a hung call returns)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
