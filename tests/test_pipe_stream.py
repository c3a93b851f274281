"""The pipe printer's parser over a real pipe: a one-writer pipe's messages are checked
in bulk (in place when nothing is pending, across reads that split a message), and a
read that is out of step (bytes no counter of ours wrote) turns the stream to parsing
each message, which still counts every intact one and each garbled one as corrupt."""

from __future__ import annotations

import fcntl
import os
import select
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest

from labd.mechanisms.pipe import _HEAD, _SENT, _SENT_AT, MAGIC, _Stream, blank_frame
from labd.worker import board
from labd.worker.contexts import LAT_EVERY, PrinterContext, WorkerSpec

PAYLOAD = 16
SIZE = _HEAD.size + PAYLOAD  # multiprocessing's length of every frame
LENGTH = SIZE.to_bytes(4, "big")  # and how it writes it, before each frame


def frame(stamp: int = 0) -> bytes:
    """A message as a one-writer counter sends it (seq and crc 0, sent_ns or 0)."""
    out = blank_frame(b"x" * PAYLOAD)
    _SENT.pack_into(out, _SENT_AT, stamp)
    return bytes(out)


class Printer:
    """A printer's context on a board of its own (printer 1 of 2: no display thread)
    and a stream over the read end of a real pipe."""

    def __init__(self) -> None:
        self.array = bytearray(8 * board.size(1, 2))
        spec = WorkerSpec(1, "printer", 1, 1, 2, {"interval": 0.0, "payload": PAYLOAD})
        wake_r, self.wake_w = os.pipe()
        self.wake = Connection(wake_r, writable=False)
        self.ctx = PrinterContext(spec, board.view(self.array), self.wake, messages=True)
        self.r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 18)  # room for a test's messages at once
        self.writer = Connection(w, readable=False)
        os.set_blocking(self.r, False)
        self.stream = _Stream(self.r, SIZE, self.ctx, trusted=True)
        self.board = board.BoardReader(self.array, 1, 2)

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


@pytest.fixture
def printer() -> Iterator[Printer]:
    p = Printer()
    yield p
    p.close()


def send(p: Printer, n: int, first: int = 0) -> None:
    """n messages of one writer, message i stamped (i + 1) if the counter times it."""
    for i in range(first, first + n):
        p.writer.send_bytes(frame(i + 1 if i % LAT_EVERY == 0 else 0))


def test_one_writers_messages_are_counted_and_timed_in_bulk(printer: Printer) -> None:
    # 2,000 messages: more than one read of 64 KiB, which ends inside a message
    send(printer, 2000)
    printer.drain()
    assert printer.board.received() == 2000
    assert printer.board.corrupt() == 0
    assert sum(printer.board.histogram()) == len(range(0, 2000, LAT_EVERY))
    assert printer.stream.trusted, "still checked in bulk"
    send(printer, 7, first=2000)  # fewer than one read's worth: in place, whole
    printer.drain()
    assert printer.board.received() == 2007
    assert not printer.stream.buf, "nothing pending after whole messages"


def test_a_message_split_between_reads_is_counted_once(printer: Printer) -> None:
    whole = len(frame()) + 4
    data = b"".join(LENGTH + frame() for _ in range(3))
    os.write(printer.writer.fileno(), data[: whole + 10])  # one and a bit
    printer.drain()
    assert printer.board.received() == 1
    os.write(printer.writer.fileno(), data[whole + 10 :])
    printer.drain()
    assert printer.board.received() == 3
    assert printer.board.corrupt() == 0
    assert printer.stream.trusted


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
