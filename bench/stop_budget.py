"""Does a SIGTERM fit systemd's TimeoutStopSec? Two flat-out queue sets with a large
backlog (the worst case for an orderly stop: every message drains through one printer),
then SIGTERM: prints the time to exit against the budget, and what each set recorded.

    python bench/stop_budget.py [--counters 4] [--run 20] [--payload 4096]

Exit status: 0 when labd exited 0 within --stop-timeout (default: labd's, the unit's
TimeoutStopSec), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import time

from benchlib import PrivateLabd, machine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counters", type=int, default=4)
    ap.add_argument("--run", type=float, default=20.0, help="seconds before SIGTERM")
    ap.add_argument("--payload", type=int, default=4096)
    ap.add_argument("--stop-timeout", type=float, default=None, help="[labd's default]")
    args = ap.parse_args()
    if args.stop_timeout is None:
        from labd.protocol import TIMEOUT_STOP_S

        args.stop_timeout = float(TIMEOUT_STOP_S)
    print(json.dumps(machine()))
    labd = PrivateLabd("stopbudget-")
    params = json.dumps({"interval": 0, "maxsize": 1_000_000, "payload": args.payload})
    try:
        proc = labd.start()
        ids = [json.loads(labd.conn.root.spawn("queue", args.counters, params))["id"]]
        ids.append(json.loads(labd.conn.root.spawn("queue", args.counters, params))["id"])
        time.sleep(args.run)  # the backlog builds up
        for s in json.loads(labd.conn.root.status(tuple(ids))):
            print(f"set {s['id']}: attempted {s['attempted']}, in flight {s['in_flight']}")
        labd.disconnect()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=300)
        took = time.monotonic() - start
        with sqlite3.connect(labd.dir / "state" / "history.sqlite3") as db:
            rows = db.execute(
                "SELECT id, state, final_json FROM sets WHERE id IN (?, ?)", ids
            ).fetchall()
        for set_id, state, final in rows:
            f = json.loads(final) if final else {}
            print(f"set {set_id}: {state}, value {f.get('value')}, attempted {f.get('attempted')}")
        ok = code == 0 and took <= args.stop_timeout
        print(
            f"SIGTERM to exit: {took:.1f} s (exit {code}); budget {args.stop_timeout:g} s: "
            f"{'within' if ok else 'OVER'}"
        )
        return 0 if ok else 1
    finally:
        if labd.proc is not None and labd.proc.poll() is None:
            labd.proc.kill()
        labd.remove()


if __name__ == "__main__":
    sys.exit(main())
