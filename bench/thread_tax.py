"""What a second thread, blocked and idle, costs a process's every ``send_bytes``.

Each labd worker has one: the daemon watch, blocked in ``select`` on labd's pidfd, which
ends the set the moment labd dies. Once a process has started a thread, glibc runs it
as a threaded process for good: each ``write`` enables and disables asynchronous
cancellation around the system call, and the GIL's mutexes, taken and dropped around
it, use atomic operations where a single-threaded process's do not.

Per round, two fresh forked children each send ``--messages`` 48-byte messages (the
pipe's default frame) with ``Connection.send_bytes`` to /dev/null, one with such a
thread and one without, in a shuffled order; CPU time per message
(``time.process_time``), the median per variant and the median of the rounds' ratios
(thread / none) with the sign test's interval.

    python bench/thread_tax.py [--rounds N] [--messages N] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import select
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

from pairstats import median_ci

FRAME = b"x" * 44  # multiprocessing adds its 4-byte length: 48 bytes on the wire


def _send(messages: int, thread: bool, report: int) -> None:
    """In the child: send, then write the CPU ns per message to ``report``."""
    if thread:
        r, _w = os.pipe()  # never written: the thread blocks for good
        threading.Thread(target=select.select, args=([r], [], []), daemon=True).start()
    conn = Connection(os.open(os.devnull, os.O_WRONLY), readable=False)
    send = conn.send_bytes
    t0 = time.process_time()
    for _ in range(messages):
        send(FRAME)
    os.write(report, repr((time.process_time() - t0) / messages * 1e9).encode())


def run(messages: int, thread: bool) -> float:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(r)
            _send(messages, thread, w)
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not out:
        raise RuntimeError(f"the child ({'thread' if thread else 'none'}) failed: {status}")
    return float(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30, help="pairs of children (30)")
    ap.add_argument("--messages", type=int, default=300_000, help="per child (300000)")
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 32), help="of the order")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    costs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        order = [False, True]
        rng.shuffle(order)
        for thread in order:
            costs[thread].append(run(args.messages, thread))
    ratios = [b / a for a, b in zip(costs[False], costs[True], strict=True)]
    low, high, _ = median_ci(ratios)
    print(f"{args.messages:,} sends a child, {args.rounds} rounds, seed {args.seed}")
    print(f"  no thread   {statistics.median(costs[False]):7.0f} ns a send")
    print(f"  a thread    {statistics.median(costs[True]):7.0f} ns a send")
    print(f"  thread / none: {statistics.median(ratios):.3f} ({low:.3f}-{high:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
