"""The pipe printer's parser over a real pipe: a one-writer pipe's messages are checked
in bulk (in place when nothing is pending, across reads that split a message), and a
read that is out of step (bytes no counter of ours wrote) turns the stream to parsing
each message, which still counts every intact one and each garbled one as corrupt.

Each test runs at two payloads: 16 bytes (the default: a message is six 8-byte words,
checked a word per head) and 13 (not whole words: checked a byte of the heads at a
time)."""

from __future__ import annotations

import fcntl
import os
import select
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from labd.mechanisms.pipe import _HEAD, _SENT, _SENT_AT, MAGIC, _Stream, blank_frame
from labd.worker import board
from labd.worker.contexts import LAT_EVERY, PrinterContext, WorkerSpec

PAYLOADS = (16, 13)  # whole words, and not


def frame(payload: int, stamp: int = 0) -> bytes:
    """A message as a one-writer counter sends it (seq and crc 0, sent_ns or 0)."""
    out = blank_frame(b"x" * payload)
    _SENT.pack_into(out, _SENT_AT, stamp)
    return bytes(out)


class Printer:
    """A printer's context on a board of its own (printer 1 of 2: no display thread)
    and a stream over the read end of a real pipe."""

    def __init__(self, payload: int) -> None:
        self.payload = payload
        self.size = _HEAD.size + payload  # multiprocessing's length of every frame
        self.length = self.size.to_bytes(4, "big")  # as it writes it, before each frame
        self.array = bytearray(8 * board.size(1, 2))
        spec = WorkerSpec(1, "printer", 1, 1, 2, {"interval": 0.0, "payload": payload})
        wake_r, self.wake_w = os.pipe()
        self.wake = Connection(wake_r, writable=False)
        self.ctx = PrinterContext(spec, board.view(self.array), self.wake, messages=True)
        self.r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 18)  # room for a test's messages at once
        self.writer = Connection(w, readable=False)
        os.set_blocking(self.r, False)
        self.stream = _Stream(self.r, self.size, self.ctx, trusted=True)
        self.board = board.BoardReader(self.array, 1, 2)

    def frame(self, stamp: int = 0) -> bytes:
        return frame(self.payload, stamp)

    def drain(self) -> None:
        """Read what was written (the stream reads at most 64 KiB at a time)."""
        while select.select([self.r], [], [], 0)[0] and self.stream.read():
            pass

    def close(self) -> None:
        self.writer.close()
        self.wake.close()
        os.close(self.wake_w)
        os.close(self.r)
        self.board.release()


@pytest.fixture(params=PAYLOADS, ids=lambda n: f"payload{n}")
def printer(request: pytest.FixtureRequest) -> Iterator[Printer]:
    p = Printer(request.param)
    yield p
    p.close()


def send(p: Printer, n: int, first: int = 0) -> None:
    """n messages of one writer, message i stamped with its send time if the counter
    times it (one in LAT_EVERY), the others 0."""
    for i in range(first, first + n):
        p.writer.send_bytes(p.frame(time.monotonic_ns() if i % LAT_EVERY == 0 else 0))


def test_one_writers_messages_are_counted_and_timed_in_bulk(printer: Printer) -> None:
    # 2,000 messages: more than one read of 64 KiB, which ends inside a message
    send(printer, 2000)
    printer.drain()
    assert printer.board.received() == 2000
    assert printer.board.corrupt() == 0
    histogram = printer.board.histogram()
    assert sum(histogram) == len(range(0, 2000, LAT_EVERY))
    # the timed ones, not others: a 0 read as a send time is hours of latency
    assert not any(histogram[board.bucket(60 * 10**9) :]), "a latency over a minute"
    assert printer.stream.trusted, "still checked in bulk"
    send(printer, 7, first=2000)  # fewer than one read's worth: in place, whole
    printer.drain()
    assert printer.board.received() == 2007
    assert not printer.stream.buf, "nothing pending after whole messages"


def test_a_message_split_between_reads_is_counted_once(printer: Printer) -> None:
    whole = len(printer.frame()) + 4
    data = b"".join(printer.length + printer.frame() for _ in range(3))
    os.write(printer.writer.fileno(), data[: whole + 10])  # one and a bit
    printer.drain()
    assert printer.board.received() == 1
    os.write(printer.writer.fileno(), data[whole + 10 :])
    printer.drain()
    assert printer.board.received() == 3
    assert printer.board.corrupt() == 0
    assert printer.stream.trusted


def test_the_read_that_completes_a_message_is_checked_whole(printer: Printer) -> None:
    # the pending start is completed alone, and the rest of the read checked in place:
    # a wrong head there is still seen
    good = printer.length + printer.frame()
    bad = bytes(4) + b"XXXX" + printer.frame()[len(MAGIC) :]
    os.write(printer.writer.fileno(), good + good[:10])
    printer.drain()
    assert printer.board.received() == 1 and printer.stream.trusted
    os.write(printer.writer.fileno(), good[10:] + good * 3 + bad + good * 3)
    printer.drain()
    assert not printer.stream.trusted, "not in step: each message parsed from then on"
    assert printer.board.received() == 8
    assert printer.board.corrupt() == 0


def test_a_pending_message_completed_out_of_step_is_noticed(printer: Printer) -> None:
    # split inside its head: the head is only whole once the next read completes it
    good = printer.length + printer.frame()
    os.write(printer.writer.fileno(), good + good[:3])
    printer.drain()
    assert printer.board.received() == 1
    os.write(printer.writer.fileno(), bytes(5) + good[8:] + good * 5)
    printer.drain()
    assert not printer.stream.trusted, "not in step: each message parsed from then on"
    assert printer.board.received() == 6
    assert printer.board.corrupt() == 0


def test_a_whole_message_with_a_wrong_head_inside_a_read_is_noticed(printer: Printer) -> None:
    # a message's size, so every later message stays in step: only a check of every
    # head sees it (not one of a read's first and last)
    good = printer.length + printer.frame()
    bad = bytes(4) + b"XXXX" + printer.frame()[len(MAGIC) :]
    os.write(printer.writer.fileno(), good * 10 + bad + good * 10)
    printer.drain()
    assert not printer.stream.trusted, "not in step: each message parsed from then on"
    assert printer.board.received() == 20
    assert printer.board.corrupt() == 0  # no magic in it: dropped, not a message


def test_bytes_out_of_step_turn_the_stream_to_parsing_each(printer: Printer) -> None:
    send(printer, 100)
    printer.drain()
    os.write(printer.writer.fileno(), b"garbage without a magic")
    send(printer, 50, first=100)
    os.write(printer.writer.fileno(), MAGIC + b"cut short")  # a magic, no intact frame
    send(printer, 50, first=150)
    printer.drain()
    printer.stream.eof()
    assert not printer.stream.trusted, "out of step: each message parsed from then on"
    assert printer.board.received() == 200
    assert printer.board.corrupt() == 1
