"""The cost of remote control: a one-shot ``labctl status`` over mutual TLS against the
same command over the unix socket, whole process, against one running labd.

It makes TLS files with ``labd tls init`` in a temporary directory, starts labd with its
unix socket and a TLS listener on 127.0.0.1, then runs ``labctl --connect unix:SOCK
status`` and ``labctl --connect 127.0.0.1:PORT --tls-cert ... status`` alternately
(which one goes first alternates too), timing each process from spawn to exit, and
prints the medians and ``ratio = tls / unix`` (target: <= 1.1), and the ratio of the
fastest runs, which a busy machine disturbs less. Exit status 1 if above the target.
Bytecode is cached (in the temporary directory) as in an installation.

    python bench/tls_oneshot.py [--runs N] [--warmup N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import script

TARGET = 1.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(root: Path) -> dict[str, str]:
    """No LABCTL_* settings; bytecode cached as in an installation (in ``root``, so the
    repository gets no ``__pycache__``), or every run would pay the compiler."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LABCTL_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


def timed(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to exit of one command, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=20, help="timed runs of each (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs of each first (3)")
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be >= 1 and --warmup >= 0")

    labd, labctl = script("labd"), script("labctl")
    root = Path(tempfile.mkdtemp(prefix="ipl"))  # short: unix socket paths are limited
    env = clean_env(root)
    sock, pki, port = root / "labd.sock", root / "pki", free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [labd, "tls", "init", str(pki), "--host", "localhost"],
            check=True,
            capture_output=True,
            env=env,
        )
        tls = [
            "--tls-cert",
            str(pki / "client.crt"),
            "--tls-key",
            str(pki / "client.key"),
            "--tls-ca",
            str(pki / "ca.crt"),
        ]
        commands = {
            "unix": [labctl, "--connect", f"unix:{sock}", "status"],
            "tls": [labctl, "--connect", f"127.0.0.1:{port}", *tls, "status"],
        }
        with open(root / "labd.log", "wb") as log:
            proc = subprocess.Popen(
                [
                    labd,
                    "--socket",
                    str(sock),
                    "--state-dir",
                    str(root / "state"),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--tls-cert",
                    str(pki / "server.crt"),
                    "--tls-key",
                    str(pki / "server.key"),
                    "--tls-ca",
                    str(pki / "ca.crt"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:  # both listeners answer (labctl never starts a daemon for --connect)
            try:
                for cmd in commands.values():
                    timed(cmd, env)
                break
            except RuntimeError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        for _ in range(args.warmup):
            for cmd in commands.values():
                timed(cmd, env)
        times: dict[str, list[float]] = {"unix": [], "tls": []}
        for i in range(args.runs):
            order = ("unix", "tls") if i % 2 == 0 else ("tls", "unix")
            for name in order:
                times[name].append(timed(commands[name], env))
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(root, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["tls"] / median["unix"]
    result: dict[str, Any] = {
        "runs": args.runs,
        "median_ms": {k: round(v * 1000, 1) for k, v in median.items()},
        "min_ms": {k: round(min(v) * 1000, 1) for k, v in times.items()},
        "max_ms": {k: round(max(v) * 1000, 1) for k, v in times.items()},
        "ratio": round(ratio, 3),
        "ratio_of_minimums": round(min(times["tls"]) / min(times["unix"]), 3),
        "target": TARGET,
        "ok": ratio <= TARGET,
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["median_ms"]
        print(
            f"labctl status, whole process, {args.runs} alternating runs each "
            f"(Python {result['machine']['python']}, nproc {result['machine']['nproc']}, "
            f"load {' '.join(map(str, result['machine']['loadavg']))})"
        )
        for name in ("unix", "tls"):
            print(
                f"  {name:<5} median {m[name]:7.1f} ms   "
                f"min {result['min_ms'][name]:7.1f}   max {result['max_ms'][name]:7.1f}"
            )
        verdict = "ok" if result["ok"] else "ABOVE TARGET"
        print(f"  ratio tls/unix = {ratio:.3f}  (target <= {TARGET}: {verdict})")
        print(
            f"  ratio of the minimums = {result['ratio_of_minimums']:.3f}"
            "  (less sensitive to a busy machine)"
        )
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
