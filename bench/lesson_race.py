"""The lesson tour's race step, ten times in a row: does the race show every time?

    python bench/lesson_race.py [--runs 10]

Runs ``labctl lesson race --json`` against one private labd and prints, per run, the
attempted increments, the value, the updates lost and what each tick added (the lesson
expects +10 a tick: ten counters at one tick; the step holds each read 50 ms before its
write, ``window=0.05``, and says so).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from benchlib import PrivateLabd, machine, script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    labd = PrivateLabd("ipclab-race-")
    labctl = script("labctl")
    try:
        labd.start()
        print(json.dumps({"machine": machine()}))
        losses = 0
        for run in range(1, args.runs + 1):
            done = subprocess.run(
                [labctl, "--connect", f"unix:{labd.socket}", "lesson", "race", "--json"],
                capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            (step,) = json.loads(done.stdout)
            f = step["figures"][0]
            losses += f["lost"] > 0
            print(
                f"run {run:2}: {f['variant']}: attempted {f['attempted']}, value "
                f"{f['value']}, lost {f['lost']} ({100 * f['lost'] / f['attempted']:.0f}%)"
            )
        print(f"{losses} of {args.runs} runs lost updates")
    finally:
        labd.close()


if __name__ == "__main__":
    sys.exit(main())
