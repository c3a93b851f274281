"""The shape of labd's background loops (the reaper, the collector): one daemon thread
that waits on file descriptors, and a wake pipe to interrupt that wait when there is
something new to wait on, or to end it."""

from __future__ import annotations

import contextlib
import os
import threading


class LoopThread:
    """Runs :meth:`_run` in a daemon thread until :meth:`close`.

    ``_run`` waits on :attr:`_wake_r` among its descriptors; when that is readable it
    calls :meth:`_drain_wake` and looks at :attr:`_closing` and its own state again.
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"w")

    def _drain_wake(self) -> None:
        os.read(self._wake_r, 4096)

    def close(self, timeout: float = 2.0) -> None:
        """End the loop; its wake pipe is closed once the thread is gone."""
        self._closing = True
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _run(self) -> None:
        raise NotImplementedError
