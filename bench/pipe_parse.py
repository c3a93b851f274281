"""What the pipe printer's parser costs per message: this tree's ``_Stream`` against
the one of an earlier commit, alternated, on the same pipe, in one process.

A pipe (1 MiB) is filled with ``--messages`` one-writer messages of labd's frame (16-byte
payload, one in 16 stamped, as a flat-out counter sends them); the parser reads it
empty in 64 KiB chunks, checking and counting them and timing the stamped ones, as
a printer does. CPU time (``time.process_time``) per message, ``--repeat`` fills per
round, the two parsers alternated each round; median and minimum per parser, and the
median of the rounds' ratios (this tree / the other) with the sign test's interval.

    python bench/pipe_parse.py [--against REV|bare] [--rounds N] [--messages N]
                               [--per-read N]

REV is any commit git knows (default HEAD~1); the comparison needs a git checkout.
``--against bare`` compares with the bare loop's reader instead (bench/barepipe.py's
printer: read, count whole messages, record the count; no check, no latency).
``--per-read N`` writes the fill N messages at a time, each followed by the reads
that drain it: a flat-out set's printer reads what is there, ~40 messages a read at
4 counters (perf counts ~24 reads per 1,000 messages), not 64 KiB. The CPU time then
includes the writes, the same for both sides.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from types import ModuleType
from typing import Any

from pairstats import median_ci

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "labd/mechanisms/pipe.py"
PAYLOAD = 16


def load_at(rev: str, into: str) -> ModuleType:
    """labd's pipe module as it was at ``rev``, loaded under another name."""
    text = subprocess.run(
        ["git", "-C", ROOT, "show", f"{rev}:{MODULE}"], capture_output=True, text=True
    )
    if text.returncode != 0:
        raise SystemExit(f"pipe_parse.py: git show {rev}:{MODULE}: {text.stderr.strip()}")
    path = os.path.join(into, "pipe_at_rev.py")
    with open(path, "w") as f:
        f.write(text.stdout)
    spec = importlib.util.spec_from_file_location("pipe_at_rev", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def messages(n: int) -> bytes:
    """n one-writer messages as multiprocessing writes them, one in 16 stamped."""
    from labd.mechanisms import pipe

    size = pipe._HEAD.size + PAYLOAD
    out = []
    for i in range(n):
        frame = pipe.blank_frame(b"x" * PAYLOAD)
        if i % 16 == 0:
            pipe._SENT.pack_into(frame, pipe._SENT_AT, time.monotonic_ns())
        out.append(size.to_bytes(4, "big") + bytes(frame))
    return b"".join(out)


class BareStream:
    """The bare loop's reader (bench/barepipe.py's printer), as a ``_Stream`` is used."""

    def __init__(self, fd: int, size: int, ctx: Any, trusted: bool = True) -> None:
        self.fd, self.wire, self.ctx, self.left = fd, 4 + size, ctx, 0

    def read(self) -> bool:
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        whole, self.left = divmod(self.left + len(data), self.wire)
        if whole:
            self.ctx.received_many(whole)
        return bool(data)


class Parser:
    """One parser (``_Stream`` of a pipe module) on a pipe of its own."""

    def __init__(self, pipe: ModuleType | None, size: int) -> None:
        """``pipe``: a pipe module whose ``_Stream`` parses, or None for the bare reader;
        ``size``: multiprocessing's length of every frame."""
        from labd.worker import board
        from labd.worker.contexts import PrinterContext, WorkerSpec

        self.array = bytearray(8 * board.size(1, 2))
        spec = WorkerSpec(1, "printer", 1, 1, 2, {"interval": 0.0, "payload": PAYLOAD})
        wake_r, self.wake_w = os.pipe()
        self.wake = Connection(wake_r, writable=False)
        ctx = PrinterContext(spec, board.view(self.array), self.wake, messages=True)
        self.r, self.w = os.pipe()
        fcntl.fcntl(self.w, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.set_blocking(self.r, False)
        make = pipe._Stream if pipe is not None else BareStream
        self.stream: Any = make(self.r, size, ctx, trusted=True)

    def cost(self, data: bytes, per_write: int = 0) -> float:
        """CPU seconds to parse ``data``, written at once or ``per_write`` bytes at a
        time, each write drained before the next."""
        step = per_write or len(data)
        t0 = time.process_time()
        for at in range(0, len(data), step):
            os.write(self.w, data[at : at + step])
            while select.select([self.r], [], [], 0)[0] and self.stream.read():
                pass
        return time.process_time() - t0

    def close(self) -> None:
        for fd in (self.r, self.w, self.wake_w):
            os.close(fd)
        self.wake.close()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="HEAD~1", help="a commit, or bare (HEAD~1)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds (20)")
    ap.add_argument("--repeat", type=int, default=10, help="fills per parser per round (10)")
    ap.add_argument("--messages", type=int, default=20000, help="per fill, < 1 MiB (20000)")
    ap.add_argument("--per-read", type=int, default=0, help="messages a write (0: the fill)")
    args = ap.parse_args(argv)
    if not 0 < args.messages <= 20000 or args.rounds < 1 or args.repeat < 1:
        ap.error("--messages 1-20000 (a fill must fit the pipe), --rounds, --repeat >= 1")
    if args.per_read < 0:
        ap.error("--per-read: 0 (the whole fill at once) or more messages a write")
    import labd.mechanisms.pipe as here

    other: ModuleType | None = None
    if args.against != "bare":
        with tempfile.TemporaryDirectory() as tmp:
            other = load_at(args.against, tmp)
    data = messages(args.messages)
    size = here._HEAD.size + PAYLOAD
    per_write = args.per_read * (here._LEN.size + size)
    parsers = {"this tree": Parser(here, size), args.against: Parser(other, size)}
    per: dict[str, list[float]] = {k: [] for k in parsers}
    ratios = []
    try:
        for _ in range(args.rounds):
            costs = {}
            for name, parser in parsers.items():
                costs[name] = sum(parser.cost(data, per_write) for _ in range(args.repeat))
                per[name].append(costs[name] / (args.repeat * args.messages) * 1e6)
            ratios.append(costs["this tree"] / costs[args.against])
    finally:
        for parser in parsers.values():
            parser.close()
    for name, xs in per.items():
        print(f"{name:>12}: {statistics.median(xs):.4f} us/message (min {min(xs):.4f})")
    low, high, cover = median_ci(ratios)
    print(
        f"this tree / {args.against}: {statistics.median(ratios):.3f} "
        f"({low:.3f}-{high:.3f}, {cover:.1%}), {args.rounds} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
