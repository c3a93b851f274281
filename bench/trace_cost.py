"""What ``trace=yes`` costs: flat-out racy sets with and without the trace, alternated in
one run on one private labd, and the ratio of their rates (traced / plain).

    python bench/trace_cost.py [--mechanism shared] [--counters 4] [--seconds 3] [--repeat 3]

Each run spawns the set, skips a second of warm-up, then takes the increments between two
status reads over ``--seconds`` (their ``sampled_at`` gives the exact time between), and
stops the set. The trace is two ``time.monotonic_ns()`` calls and three stores per
increment, outside the read-modify-write window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

from benchlib import PrivateLabd, machine

WARMUP = 1.0


def status(conn: Any, sid: int) -> dict[str, Any]:
    (s,) = json.loads(conn.root.status((sid,)))
    return s  # type: ignore[no-any-return]


def rate(conn: Any, mechanism: str, counters: int, seconds: float, trace: bool) -> float:
    params = {"interval": 0, "trace": trace}
    sid = json.loads(conn.root.spawn(mechanism, counters, json.dumps(params)))["id"]
    try:
        time.sleep(WARMUP)
        first = status(conn, sid)
        time.sleep(seconds)
        last = status(conn, sid)
    finally:
        conn.root.stop((sid,))
    return (last["attempted"] - first["attempted"]) / (last["sampled_at"] - first["sampled_at"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mechanism", default="shared", choices=("shared", "manager"))
    ap.add_argument("--counters", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    labd = PrivateLabd("ipclab-trace-")
    try:
        labd.start()
        plain, traced = [], []
        for _ in range(args.repeat):  # alternated: the machine's load hits both alike
            plain.append(rate(labd.conn, args.mechanism, args.counters, args.seconds, False))
            traced.append(rate(labd.conn, args.mechanism, args.counters, args.seconds, True))
        p, t = statistics.median(plain), statistics.median(traced)
        print(json.dumps({"machine": machine()}))
        print(
            f"{args.mechanism} {args.counters} interval=0: plain {p:,.0f}/s, trace=yes "
            f"{t:,.0f}/s, ratio {t / p:.2f} (median of {args.repeat}, alternated)"
        )
    finally:
        labd.close()


if __name__ == "__main__":
    sys.exit(main())
