"""``pipe``: each increment is a framed message on a ``multiprocessing.Pipe``.

By default every counter has a pipe of its own and printer ``j`` reads the ends
``j, j+M, ...``: one writer per pipe, so nothing is ever garbled. With ``shared_end=yes``
all counters write one end, the unsafe case the lesson warns of: only writes up to
``PIPE_BUF`` (4096 bytes on Linux) are atomic, so when the pipe fills in the middle of a
larger message, another counter's bytes land inside it (measured: 8 flat-out counters
garble a few % of 4 KiB messages and about half of 64 KiB ones). All printers then
share the one read end, and a message larger than one read can be split between them.

A message is multiprocessing's framing (``!i`` length, or ``-1`` then a ``!Q`` length)
around our frame::

    magic 4s | seq Q | sent_ns Q | payload length I | crc32 I | payload

where the crc32 covers the payload followed by seq, sent_ns and length (so a counter
computes the payload's part once). Printers never call ``recv_bytes`` (a garbled length
would block forever or allocate gigabytes): they read the raw fd, parse both framings
themselves and go from magic to magic: a magic that does not start an intact frame is
one ``corrupt`` message. They stop at EOF: once the counters have exited and labd has
closed its copies of the ends (:meth:`PipeMessages.started`), no write end is left open.

On a pipe with one writer (``shared_end=no``) nothing can be garbled, so the counter
writes only ``sent_ns`` (seq and crc32 stay 0), and when flat out only in message 0,
``LAT_EVERY``, 2 ``LAT_EVERY``, ... of its pipe (the others carry 0); the printer checks
each read's whole messages at once (that each starts with length + magic: one strided
slice of the read seen as 8-byte words when a message is whole words long, as with the
default payload, else one per byte of the head; in C, on the read itself when nothing
is pending) instead of parsing each in Python, and times the stamped ones. Parsing and
checking each 44-byte message cost ~1.2 us, enough to make the printer the limit of
its set.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from labd.mechanisms.base import Mechanism, SetupEnv
from labd.params import PAYLOAD, Param
from labd.worker.contexts import CounterContext, PrinterContext

MAGIC = b"\xa5LBF"  # read as a length it is negative: never plausible
_HEAD = struct.Struct("!4sQQII")  # magic, seq, sent_ns, payload length, crc32
_FIELDS = struct.Struct("!QQI")  # the part of the header the crc covers
_CRC = struct.Struct("!I")
_LEN = struct.Struct("!i")  # multiprocessing's length prefix ...
_LEN64 = struct.Struct("!Q")  # ... and its long form after a -1
_PREFIX_MAX = _LEN.size + _LEN64.size  # the long form: -1, then the length
_KEEP = _PREFIX_MAX + len(MAGIC) - 1  # kept at the end: a length and a partial magic
_CHUNK = 1 << 16
_BULK_MAX = 4096  # larger messages: few per read, the per-message parser is fine
_PLEN = struct.Struct("!I")
_SENT = struct.Struct("!Q")
_SENT_AT = len(MAGIC) + 8  # where sent_ns sits in a frame
_STAMP_AT = _LEN.size + _SENT_AT  # and in a message (after multiprocessing's length)
_WHO_SHIFT = 40  # a shared end's seq: counter index << 40 | its message number
_NOTES = 3  # corrupt messages each printer describes in its output (labctl explain)
NOTE = "corrupt: "  # how those lines start
_DRAIN_S = 0.5  # asked to stop, a silent end without EOF (a write end leaked by fork) ends


class PipeMessages(Mechanism):
    """One ``multiprocessing.Pipe`` per counter (or one shared by all: unsafe)."""

    name = "pipe"
    summary = "multiprocessing.Pipe per counter; shared_end=yes shows interleaved messages"
    params = (
        PAYLOAD,
        Param(
            "shared_end",
            bool,
            False,
            "all counters write one end: the unsafe case, large messages interleave and "
            "are counted as corrupt (so do several printers on its one read end)",
        ),
    )
    messages = True

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self._shared = bool(self.values.get("shared_end", False))
        self._pipes: list[tuple[Connection, Connection]] = []
        self._printers = 1

    def setup(self, env: SetupEnv) -> None:
        self._printers = env.printers
        for _ in range(1 if self._shared else env.counters):
            self._pipes.append(env.context.Pipe(duplex=False))

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return (self._pipes[0 if self._shared else index][1],)

    def printer_args(self, index: int) -> tuple[Any, ...]:
        if self._shared:  # every printer reads the one end
            return ((self._pipes[0][0],),)
        return (tuple(r for r, _ in self._pipes[index :: self._printers]),)

    def started(self) -> None:
        """Close the daemon's copies: the printers then see EOF once the counters exit."""
        self._close_all()

    def teardown(self) -> None:
        self._close_all()
        self._pipes = []

    def _close_all(self) -> None:
        for r, w in self._pipes:
            r.close()
            w.close()

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        (conn,) = args
        data = b"x" * int(ctx.values.get("payload", 16))
        size = len(data)
        data_crc = zlib.crc32(data)
        frame = blank_frame(data)
        if not ctx.values.get("shared_end", False):
            cls._one_writer(ctx, conn, frame)
            return
        crc_at = len(MAGIC) + _FIELDS.size
        fields = memoryview(frame)[len(MAGIC) : crc_at]  # what the crc covers, with data_crc
        pack_fields, pack_crc, crc32 = _FIELDS.pack_into, _CRC.pack_into, zlib.crc32
        send = conn.send_bytes
        batches, now = ctx.sends()  # paced: the tick each message was due at
        seq = ctx.index << _WHO_SHIFT  # the writer in seq's top bits: explain names it
        for n in batches:
            for _ in range(n):
                seq += 1
                pack_fields(frame, len(MAGIC), seq, now(), size)
                pack_crc(frame, crc_at, crc32(fields, data_crc))
                send(frame)

    @staticmethod
    def _one_writer(ctx: CounterContext, conn: Connection, frame: bytearray) -> None:
        """A pipe of its own: nothing can garble or reorder its messages, and the printer
        checks them in bulk (length and magic), so seq and crc stay 0. Only message
        0, k, 2k, ... of the pipe carries its send time (k = ``ctx.lat_every``, 1 when
        paced): the printer knows which, and times those. Stamping every message cost
        ~0.12 us of ~1 us; the others go out as one unchanging ``bytes``.

        A batch's whole groups of k (a stamped message, then k - 1 plain ones) go out
        in one loop each, without counting down per group: the bookkeeping per group
        cost the counter ~20 ns a message beside the bare loop's, ~1 % of a message
        (bench/pipe_send.py). A group a batch leaves unfinished is finished first in
        the next."""
        send, pack_sent = conn.send_bytes, _SENT.pack_into
        batches, now = ctx.sends()  # paced: the tick each message was due at
        sent_at, every = _SENT_AT, ctx.lat_every
        plain = bytes(frame)
        rest = range(every - 1)  # a group's plain messages
        left = 0  # plain messages the last batch's unfinished group still owes
        for n in batches:
            if left:
                m = n if n < left else left
                for _ in range(m):
                    send(plain)
                n -= m
                left -= m
            groups, tail = divmod(n, every)
            for _ in range(groups):
                pack_sent(frame, sent_at, now())
                send(frame)
                for _ in rest:
                    send(plain)
            if tail:  # a group begun: its stamped message and what the batch has room for
                pack_sent(frame, sent_at, now())
                send(frame)
                for _ in range(tail - 1):
                    send(plain)
                left = every - tail

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (ends,) = args
        size = _HEAD.size + int(ctx.values.get("payload", 16))
        trusted = not ctx.values.get("shared_end", False)
        streams = {end.fileno(): _Stream(end.fileno(), size, ctx, trusted) for end in ends}
        wake = ctx.wake.fileno()
        if not streams:
            wait([wake])  # more printers than pipes: nothing to read until the stop
            return
        for fd in streams:
            os.set_blocking(fd, False)  # a shared read end: another printer may drain it
        stopping = False
        while streams:
            if stopping:
                ready = wait(list(streams), timeout=_DRAIN_S)
                if not ready:
                    break  # a write end is still open somewhere, but nothing comes
            else:
                ready = wait([*streams, wake])
            for fd in ready:
                if fd == wake:
                    stopping = True
                elif not streams[fd].read():
                    del streams[fd]
        for stream in streams.values():
            stream.eof()


class _Stream:
    """The bytes read from one end, not yet parsed.

    Every message carries the magic once, so the parser goes from magic to magic: a
    magic that does not start an intact frame behind a valid length is one corrupt
    message, and bytes without a magic (the rest of torn messages) are dropped.
    """

    def __init__(self, fd: int, size: int, ctx: PrinterContext, trusted: bool = False) -> None:
        self.fd = fd
        self.size = size  # multiprocessing's length of every valid frame
        self.buf = bytearray()
        self.scan = 0  # where to look for the next magic in buf
        self.received: Callable[[int], None] = ctx.received
        self.corrupt: Callable[[], None] = ctx.corrupt
        self.ctx = ctx
        # One writer per pipe: messages arrive whole and in order, each 4 + size bytes
        # from the last. Check a read's whole messages at once (each starts with the
        # length + magic: a strided slice per byte of them, in C) instead of parsing
        # each in Python.
        self.one_writer = trusted
        self.trusted = trusted and size <= _BULK_MAX
        self.wire = _LEN.size + size
        self.head = _LEN.pack(size) + MAGIC  # starts every message
        most = _CHUNK // self.wire + 1  # messages in one read, at most
        # A message a whole number of 8-byte words long (48 bytes with the default
        # payload): its head (length + magic) is its first word and its stamp its third
        # (_STAMP_AT), so one strided slice of the read seen as words gathers every head
        # (or every stamp) at once. Cheaper than a slice per byte of the head when a
        # read brings ~40 messages, as a flat-out printer's do.
        self.words = self.wire // 8 if self.wire % 8 == 0 else 0  # 0: byte by byte
        self.heads = self.head * most if self.words else b""  # k heads: [: 8 * k]
        # else byte j of k heads: self.columns[j][:k]
        self.columns = [] if self.words else [bytes([b]) * most for b in self.head]
        self.every = ctx.lat_every  # a one-writer pipe times message 0, k, 2k, ...
        self.unpack: dict[int, struct.Struct] = {}  # n big-endian stamps, by n
        self.seen = 0  # messages of this pipe so far
        self.notes = _NOTES

    def read(self) -> bool:
        """Read what is there and parse it; False at EOF."""
        try:
            data = os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return True  # another printer on the same end took it
        if not data:
            self.eof()
            return False
        if self.trusted:
            at = self.complete(data) if self.buf else 0
            if not self.buf:  # nothing pending: check the rest of the read in place
                at += self.bulk(data, at)
                if at == len(data):
                    return True
            data = data[at:]  # a partial message (or not in step: parse() says)
        self.buf += data
        done = self.parse()
        if done:
            del self.buf[:done]
            self.scan -= done
        return True

    def eof(self) -> None:
        """Each magic left in a partial frame at the end is one corrupt message."""
        for _ in range(self.buf.count(MAGIC, self.scan)):
            self.corrupt()
        self.buf.clear()
        self.scan = 0

    def parse(self) -> int:
        """Consume the complete frames in the buffer; return how many bytes are done with."""
        if self.trusted:
            if len(self.buf) < self.wire:
                return 0  # not one whole message yet
            done = self.bulk(self.buf)
            if done:
                return done  # whole messages only: the buffer starts at the next one
            self.trusted = False  # out of step (a bug, or a foreign writer): each from now
        return self.parse_each()

    def complete(self, data: bytes) -> int:
        """The pending start of a message (shorter than one) completed from the start of
        ``data`` and checked alone; returns how many bytes of ``data`` it took. The
        buffer is left empty when the message was whole and in step (the rest of the
        read is then checked in place, not copied behind it)."""
        take = self.wire - len(self.buf)
        self.buf += data[:take]
        if len(self.buf) == self.wire and self.bulk(self.buf):
            self.buf.clear()
        return min(take, len(data))

    def bulk(self, buf: bytes | bytearray, start: int = 0) -> int:
        """Whole messages from ``start`` in ``buf`` (a read, or the buffer), checked at
        once; returns their length in bytes, 0 if not in step."""
        w = self.wire
        k = (len(buf) - start) // w
        if k <= 0:
            return 0
        end = start + k * w
        first, every = (-self.seen) % self.every, self.every  # the ones the counter timed
        sent: Sequence[int]
        if self.words:
            at = (first * w + _STAMP_AT) // 8  # the first timed message's stamp, in words
            with memoryview(buf) as whole, whole[start:end] as read, read.cast("Q") as words:
                heads = words[:: self.words].tobytes()
                stamps = words[at :: self.words * every].tobytes()
            if heads != self.heads[: 8 * k]:
                return 0  # not in step (cannot happen with one writer): parse each
            n = len(stamps) // 8
            unpack = self.unpack.get(n) or self.unpack.setdefault(n, struct.Struct(f">{n}Q"))
            sent = unpack.unpack(stamps)
        else:
            for j, column in enumerate(self.columns):  # a strided slice: ~4x a count's
                if buf[start + j : end : w] != column[:k]:
                    return 0
            unpack_from, at = _SENT.unpack_from, start + _STAMP_AT
            sent = [unpack_from(buf, at + i * w)[0] for i in range(first, k, every)]
        self.seen += k
        self.ctx.received_many(k, sent)
        return end - start

    def parse_each(self) -> int:
        buf, size = self.buf, self.size
        end = len(buf)
        done, scan = 0, self.scan
        with memoryview(buf) as view:
            while True:
                i = buf.find(MAGIC, scan)
                if i < 0:  # keep what may be a length and the start of a magic
                    done, scan = max(done, end - _KEEP), max(scan, end - len(MAGIC) + 1)
                    break
                if end - i < size:  # wait for the rest, keeping its length
                    done, scan = max(done, i - _PREFIX_MAX), i
                    break
                sent_ns = (
                    _check(view, i, size, self.one_writer)
                    if _prefixed(buf, i, size, done)
                    else None
                )
                if sent_ns is None:
                    self.corrupt()
                    if self.notes and not self.one_writer:
                        self.notes -= 1
                        self.ctx.note(_anatomy(buf, i, size))
                    scan = i + 1
                elif self.one_writer:  # timed by the counter, or 0
                    self.ctx.received_many(1, (sent_ns,) if sent_ns else ())
                    done = scan = i + size
                else:
                    self.received(sent_ns)
                    done = scan = i + size
        self.scan = scan
        return done


def blank_frame(payload: bytes) -> bytearray:
    """A message's frame around ``payload``, with seq, sent_ns and crc32 still 0."""
    frame = bytearray(MAGIC + bytes(_HEAD.size - len(MAGIC)) + payload)
    _PLEN.pack_into(frame, len(MAGIC) + 16, len(payload))
    return frame


def _anatomy(buf: bytearray, at: int, size: int) -> str:
    """Whose message the corrupt frame at ``at`` was, and whose bytes cut into it."""
    mask = (1 << _WHO_SHIFT) - 1
    _magic, seq, _sent, _length, _crc = _HEAD.unpack_from(buf, at)
    whose = f"counter {seq >> _WHO_SHIFT}'s message {seq & mask:,}"
    cut = buf.find(MAGIC, at + 1, at + size)
    if cut < 0 or len(buf) - cut < _HEAD.size:
        return f"{NOTE}{whose} ({size:,} bytes) did not arrive whole"
    _magic, other, _sent, _length, _crc = _HEAD.unpack_from(buf, cut)
    return (
        f"{NOTE}{whose} ({size:,} bytes) was cut after {cut - at - _LEN.size:,} bytes by "
        f"counter {other >> _WHO_SHIFT}'s message {other & mask:,}"
    )


def _prefixed(buf: bytearray, at: int, size: int, start: int) -> bool:
    """Whether multiprocessing's length right before ``at`` (not before ``start``) is size."""
    if at - _LEN.size >= start and _LEN.unpack_from(buf, at - _LEN.size)[0] == size:
        return True
    return (
        at - _PREFIX_MAX >= start
        and _LEN.unpack_from(buf, at - _PREFIX_MAX)[0] == -1
        and _LEN64.unpack_from(buf, at - _LEN64.size)[0] == size
    )


def _check(view: memoryview, at: int, size: int, one_writer: bool = False) -> int | None:
    """The send time of the frame whose magic is at ``at`` if it is intact, else None."""
    _magic, _seq, sent_ns, length, crc = _HEAD.unpack_from(view, at)
    if length != size - _HEAD.size:
        return None
    if one_writer:
        return int(sent_ns)  # no crc: nothing can garble one writer's messages
    start = at + len(MAGIC)
    data_crc = zlib.crc32(view[at + _HEAD.size : at + size])
    if zlib.crc32(view[start : start + _FIELDS.size], data_crc) != crc:
        return None
    return int(sent_ns)
