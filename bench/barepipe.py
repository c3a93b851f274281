"""``barepipe``: the bare loop of bench/overhead.py as a labd mechanism, for
bench/pipe_procs.py's ``barecode`` variant (a labd set whose counters and printer run
the bare loop's code, not PipeMessages'): what a labd set costs apart from its code.

Loaded by a private labd through ``LABD_EXTRA_MECHANISMS=barepipe=barepipe:BarePipe``
with this directory on ``PYTHONPATH``; not a plugin anyone should install.

The counter sends one unchanging ``bytes`` of labd's frame size per message, as
``overhead.bare_pipe_counter`` does, in the batches labd's counters use. The printer
reads each end in 64 KiB chunks and counts whole messages, as
``overhead.bare_pipe_printer`` does, and records them on labd's board; asked to stop,
it reads on until EOF (or half a second of silence), as PipeMessages' printer does.
"""

from __future__ import annotations

import os
from multiprocessing.connection import wait
from typing import Any

from labd.mechanisms.pipe import _CHUNK, _DRAIN_S, _HEAD, PipeMessages
from labd.worker.contexts import CounterContext, PrinterContext


class BarePipe(PipeMessages):
    name = "barepipe"
    summary = "the bare loop's pipe counter and printer (bench/pipe_procs.py only)"

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        (conn,) = args
        frame = b"x" * (_HEAD.size + int(ctx.values.get("payload", 16)))
        send = conn.send_bytes
        batches, _stamp = ctx.sends()
        for n in batches:
            for _ in range(n):
                send(frame)

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        (ends,) = args
        wire = 4 + _HEAD.size + int(ctx.values.get("payload", 16))
        left = {end.fileno(): 0 for end in ends}  # bytes of a partial message, per end
        wake = ctx.wake.fileno()
        stopping = False
        while left:
            ready = wait(list(left), timeout=_DRAIN_S) if stopping else wait([*left, wake])
            if not ready:
                break
            for fd in ready:
                assert isinstance(fd, int)
                if fd == wake:
                    stopping = True
                    continue
                data = os.read(fd, _CHUNK)
                if not data:
                    del left[fd]
                    continue
                whole, left[fd] = divmod(left[fd] + len(data), wire)
                if whole:
                    ctx.received_many(whole)
