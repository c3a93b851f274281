"""One thread that reads every set's printer output into its :class:`PrintLog`.

A log whose lines the disk refused (full, I/O error) when its set ended is retried
every :data:`RETRY` seconds until they are written."""

from __future__ import annotations

import logging
import os
import selectors
import threading
from multiprocessing.connection import Connection

from labd.loopthread import LoopThread
from labd.printlog import PrintLog

log = logging.getLogger("labd.collector")
CHUNK = 1 << 16
RETRY = 1.0


class Collector(LoopThread):
    def __init__(self) -> None:
        super().__init__("collector")
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._done: dict[int, threading.Event] = {}
        self._unwritten: list[PrintLog] = []  # ended sets' logs the disk refused

    def add(self, source: Connection, sink: PrintLog) -> threading.Event:
        """Read ``source`` into ``sink`` until EOF; the event is set once it is drained."""
        done = threading.Event()
        with self._lock:
            self._done[source.fileno()] = done
            self._sel.register(source.fileno(), selectors.EVENT_READ, (source, sink))
        self._wake()
        return done

    def _run(self) -> None:
        while not self._closing:
            ready = self._sel.select(RETRY if self._unwritten else None)
            self._unwritten = [sink for sink in self._unwritten if not sink.retry()]
            for key, _ in ready:
                if key.data is None:
                    self._drain_wake()
                    continue
                source, sink = key.data
                try:
                    chunk = os.read(key.fd, CHUNK)
                    if chunk:
                        sink.append(chunk.decode("utf-8", "replace"))
                        continue
                except Exception as exc:  # one set's trouble (disk full) is not everyone's
                    log.error("printer output of fd %d: %s: giving up on it", key.fd, exc)
                self._finish(key.fd, source, sink)

    def close(self, timeout: float = 2.0) -> None:
        super().close(timeout)
        if not self.alive:
            self._sel.close()

    def _finish(self, fd: int, source: Connection, sink: PrintLog) -> None:
        with self._lock:
            self._sel.unregister(fd)
            done = self._done.pop(fd)
        try:
            sink.close()  # flushes the last partial line
            if sink.unwritten:
                self._unwritten.append(sink)
        except Exception as exc:
            log.error("closing a printer log: %s", exc)
        source.close()
        done.set()
