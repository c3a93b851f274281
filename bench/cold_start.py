"""How fast labctl starts: a one-shot command against its imports, and the REPL's first prompt.

It starts one labd on a unix socket in a temporary directory, then:

- runs ``labctl --connect unix:SOCK status`` and ``python -c "import click, rpyc"``
  alternately (which one goes first alternates too), timing each whole process from
  spawn to exit, and prints the medians and ``ratio = labctl / imports`` (target: <= 1.3):
  what the one-shot path costs beyond the two libraries it cannot do without;
- opens the REPL (``labctl --connect unix:SOCK``) in a pseudo-terminal with pexpect and
  times it from spawn to the first prompt, beside ``python -c "import click, rpyc,
  prompt_toolkit"`` for scale; then leaves it with Ctrl-D.

Exit status 1 if the one-shot ratio is above the target.

    python bench/cold_start.py [--runs N] [--warmup N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib import script

TARGET = 1.3
PROMPT = rb"labd\.sock(?:\x1b\[[0-9;]*m)*>"  # the prompt's end, coloured or not


def bench_env(root: Path) -> dict[str, str]:
    """No labctl settings of the user's; bytecode cached (as in an installation) in a
    private prefix, so both sides run from .pyc files after the warm-up and the
    repository gets no __pycache__."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LABCTL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(
        XDG_STATE_HOME=str(root / "xdg"),
        PYTHONPYCACHEPREFIX=str(root / "pycache"),
        PROMPT_TOOLKIT_NO_CPR="1",
        TERM="xterm",
    )
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit of one command, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"cold_start: {' '.join(cmd)} failed: {done.stderr.decode().strip()}")
    return took


def to_first_prompt(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to the REPL's first prompt in a pseudo-terminal."""
    import pexpect

    start = time.perf_counter()
    child = pexpect.spawn(cmd[0], cmd[1:], env=env, dimensions=(40, 120), timeout=20)
    try:
        child.expect(PROMPT)
        took = time.perf_counter() - start
        child.sendcontrol("d")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    if child.exitstatus != 0:
        sys.exit(f"cold_start: the REPL exited with {child.exitstatus}")
    return took


def alternate(
    runs: int, warmup: int, a: Callable[[], float], b: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """``runs`` timings of each, interleaved, after ``warmup`` untimed rounds."""
    for _ in range(warmup):
        a(), b()
    times_a: list[float] = []
    times_b: list[float] = []
    for i in range(runs):
        first, second = ((a, times_a), (b, times_b)) if i % 2 == 0 else ((b, times_b), (a, times_a))
        first[1].append(first[0]())
        second[1].append(second[0]())
    return times_a, times_b


def start_labd(root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    sock = root / "labd.sock"
    log = open(root / "labd.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [script("labd"), "--socket", str(sock), "--state-dir", str(root / "state")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    probe = [script("labctl"), "--connect", f"unix:{sock}", "status"]
    while subprocess.run(probe, env=env, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit(f"cold_start: labd did not start (log: {root / 'labd.log'})")
        time.sleep(0.05)
    return proc


def stop_labd(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        sys.exit("cold_start: labd did not stop on SIGTERM")
    if code != 0:
        sys.exit(f"cold_start: labd exited with {code} on SIGTERM")


def measure(runs: int, warmup: int, root: Path) -> dict[str, Any]:
    env = bench_env(root)
    address = f"unix:{root / 'labd.sock'}"
    labctl = script("labctl")
    oneshot = [labctl, "--connect", address, "status"]
    imports = [sys.executable, "-c", "import click, rpyc"]
    repl_imports = [sys.executable, "-c", "import click, rpyc, prompt_toolkit"]
    load_start = os.getloadavg()[0]
    shot, base = alternate(runs, warmup, lambda: timed(oneshot, env), lambda: timed(imports, env))
    prompt_runs = max(5, runs // 2)
    prompt, scale = alternate(
        prompt_runs,
        1,
        lambda: to_first_prompt([labctl, "--connect", address], env),
        lambda: timed(repl_imports, env),
    )
    return {
        "runs": runs,
        "oneshot_s": statistics.median(shot),
        "imports_s": statistics.median(base),
        "ratio": statistics.median(shot) / statistics.median(base),
        "ratio_fastest": min(shot) / min(base),
        "prompt_runs": prompt_runs,
        "first_prompt_s": statistics.median(prompt),
        "repl_imports_s": statistics.median(scale),
        "target": TARGET,
        "load": [load_start, os.getloadavg()[0]],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def report(r: dict[str, Any]) -> str:
    ms = lambda s: f"{s * 1000:7.1f} ms"  # noqa: E731
    rows = [
        ("labctl status (whole process)", ms(r["oneshot_s"])),
        ('python -c "import click, rpyc"', ms(r["imports_s"])),
        ("ratio (target <= 1.3)", f"{r['ratio']:7.2f}"),
        ("ratio of the fastest runs", f"{r['ratio_fastest']:7.2f}"),
        (f"labctl REPL: spawn to first prompt ({r['prompt_runs']} runs)", ms(r["first_prompt_s"])),
        ('python -c "import click, rpyc, prompt_toolkit"', ms(r["repl_imports_s"])),
    ]
    width = max(len(name) for name, _ in rows)
    head = (
        f"cold start, median of {r['runs']} runs each (Python {r['python']}, {r['cpus']} CPUs, "
        f"load average {r['load'][0]:.1f} -> {r['load'][1]:.1f})"
    )
    return "\n".join([head, *(f"  {name.ljust(width)}  {value}" for name, value in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each (20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="iplcold"))
    labd = start_labd(root, bench_env(root))
    try:
        result = measure(args.runs, args.warmup, root)
    finally:
        stop_labd(labd)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0 if result["ratio"] <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
