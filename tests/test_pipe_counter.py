"""The one-writer pipe counter's stamps: flat out, exactly messages 0, k, 2k, ... of its
pipe carry their send time (k = LAT_EVERY), whatever the batches' sizes, since the
printer times those and only those; paced, every message does. The counter runs its
real loop on a real CounterContext and board, writing a real pipe read here."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from labd.mechanisms.pipe import _SENT, _SENT_AT, PipeMessages, blank_frame
from labd.worker import board
from labd.worker.contexts import LAT_EVERY, CounterContext, WorkerSpec

MESSAGES = 3000  # flat out the batches grow 1, 2, 4, ...: groups are cut at many places


class Counter:
    """Counter 0 of a one-counter set on a board of its own, its loop in a thread."""

    def __init__(self, interval: float) -> None:
        spec = WorkerSpec(1, "counter", 0, 1, 1, {"interval": interval})
        self.array = bytearray(8 * board.size(1, 1))
        wake_r, self.wake_w = os.pipe()
        self.wake = Connection(wake_r, writable=False)
        self.ctx = CounterContext(spec, board.view(self.array), self.wake)
        r, w = os.pipe()
        self.reader = Connection(r, writable=False)
        self.writer = Connection(w, readable=False)
        self.thread = threading.Thread(
            target=PipeMessages._one_writer,
            args=(self.ctx, self.writer, blank_frame(b"x" * 16)),
            daemon=True,
        )

    def stamps(self, n: int) -> list[int]:
        """The send time each of the first n messages carries (0: none), then stop it."""
        self.thread.start()
        out = [_SENT.unpack_from(self.reader.recv_bytes(), _SENT_AT)[0] for _ in range(n)]
        os.write(self.wake_w, b"s")
        while self.thread.is_alive():  # it may be blocked on a full pipe: drain it
            if self.reader.poll(0.01):
                self.reader.recv_bytes()
        self.thread.join()
        return out

    def close(self) -> None:
        for conn in (self.reader, self.writer, self.wake):
            conn.close()
        os.close(self.wake_w)


@pytest.fixture
def counter(request: pytest.FixtureRequest) -> Iterator[Counter]:
    c = Counter(request.param)
    yield c
    c.close()


@pytest.mark.parametrize("counter", [0.0], indirect=True, ids=["flat-out"])
def test_flat_out_exactly_every_kth_message_is_stamped(counter: Counter) -> None:
    before = time.monotonic_ns()
    stamps = counter.stamps(MESSAGES)
    timed = [i for i, s in enumerate(stamps) if s]
    assert timed == list(range(0, MESSAGES, LAT_EVERY))
    assert all(before <= stamps[i] <= time.monotonic_ns() for i in timed)
    assert sorted(stamps[i] for i in timed) == [stamps[i] for i in timed]


@pytest.mark.parametrize("counter", [0.001], indirect=True, ids=["paced"])
def test_paced_every_message_is_stamped(counter: Counter) -> None:
    stamps = counter.stamps(40)
    assert all(stamps), stamps
    assert stamps == sorted(stamps)
