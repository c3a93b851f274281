"""What a one-writer pipe counter's loop costs per message beside the bare loop's, apart
from the send itself: this tree's ``PipeMessages._one_writer`` against an earlier
commit's and against the bare loop (``for _ in range(n): send(frame)``), alternated,
in one process.

``send`` is a C function that does nothing with the message (``len``), so what is
measured is the loop: stamping one message in ``LAT_EVERY`` with its send time and
the bookkeeping that picks which. Batches are ``--batch`` messages (a flat-out
counter's last a few ms: ~2,000-4,000 messages at ~1-2 us each). CPU time per message
(``time.process_time``), per round each loop once; the median per loop and the median
of the rounds' differences from the bare loop, in ns a message, with the sign test's
interval.

    python bench/pipe_send.py [--against REV] [--rounds N] [--batches N] [--batch N]

REV is any commit git knows (default HEAD~1); it needs a git checkout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType

from overhead import PIPE_FRAME
from pairstats import median_ci
from pipe_parse import load_at

PAYLOAD = 16


class Context:
    """What ``_one_writer`` asks of a flat-out counter's context: fixed batches."""

    def __init__(self, batches: Sequence[int], every: int) -> None:
        self._batches = batches
        self.lat_every = every

    def sends(self) -> tuple[Iterator[int], Callable[[], int]]:
        return iter(self._batches), time.monotonic_ns


class Null:
    """A connection whose ``send_bytes`` does nothing, in C."""

    send_bytes = staticmethod(len)


def labd_loop(module: ModuleType, batches: Sequence[int]) -> Callable[[], None]:
    frame = module.blank_frame(b"x" * PAYLOAD)
    from labd.worker.contexts import LAT_EVERY

    ctx = Context(batches, LAT_EVERY)
    return lambda: module.PipeMessages._one_writer(ctx, Null(), frame)


def bare_loop(batches: Sequence[int]) -> Callable[[], None]:
    frame = b"x" * PIPE_FRAME  # overhead.py's bare counter sends this

    def run() -> None:
        send = Null.send_bytes
        for n in batches:
            for _ in range(n):
                send(frame)

    return run


def per_message(loop: Callable[[], None], messages: int) -> float:
    t0 = time.process_time()
    loop()
    return (time.process_time() - t0) / messages * 1e9


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default="HEAD~1", help="a commit (HEAD~1)")
    ap.add_argument("--rounds", type=int, default=30, help="rounds (30)")
    ap.add_argument("--batches", type=int, default=200, help="batches a run (200)")
    ap.add_argument("--batch", type=int, default=3000, help="messages a batch (3000)")
    args = ap.parse_args(argv)
    from labd.mechanisms import pipe as here

    batches = [args.batch] * args.batches
    messages = sum(batches)
    with tempfile.TemporaryDirectory() as tmp:
        other = load_at(args.against, tmp)
    loops = {
        "bare": bare_loop(batches),
        "this tree": labd_loop(here, batches),
        args.against: labd_loop(other, batches),
    }
    costs: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, loop in loops.items():
            costs[name].append(per_message(loop, messages))
    print(f"{messages:,} messages a run, {args.rounds} rounds; ns a message, median")
    for name, values in costs.items():
        print(f"  {name:12} {statistics.median(values):7.1f}")
    for name in loops:
        if name == "bare":
            continue
        extra = [a - b for a, b in zip(costs[name], costs["bare"], strict=True)]
        low, high, _ = median_ci(extra)
        print(f"  {name} - bare: {statistics.median(extra):+.1f} ns ({low:+.1f} to {high:+.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
