"""Waiting for an experiment labd runs: a progress bar on stderr (run i of n, case,
ETA), by polling ``experiment(id)``; Ctrl-C asks labd to cancel it."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from labctl import humane
from labctl.client import Client

POLL_S = 0.25
CANCEL_WAIT_S = 120.0
LIVE = ("queued", "running")
WIDTH = 79


def line(e: dict[str, Any]) -> str:
    p = e.get("progress") or {}
    total = p.get("runs") or 1
    done = p.get("done") or 0
    filled = round(20 * done / total)
    bar = "#" * filled + "." * (20 - filled)
    if e["state"] == "queued":
        return f"[{bar}] experiment {e['id']} waits for the one before it"
    if not p.get("run"):
        return f"[{bar}] experiment {e['id']} starting"
    eta = humane.duration(p.get("eta_s")) if p.get("eta_s") is not None else "-"
    run = p.get("run") or done
    text = f"[{bar}] run {run}/{total}  {p.get('case') or ''}"
    tail = f"  ETA {eta}"
    return text[: WIDTH - len(tail)] + tail


def follow(client: Callable[[], Client], exp_id: int, out: TextIO | None = None) -> dict[str, Any]:
    """Poll until the experiment ends; its final record."""
    stream = out or sys.stderr
    tty = stream.isatty()
    shown = ""
    while True:
        e = client().experiment(exp_id)
        if e["state"] not in LIVE:
            if tty and shown:
                stream.write("\r" + " " * WIDTH + "\r")
                stream.flush()
            return e
        text = line(e)
        if text != shown and (tty or text.split("ETA")[0] != shown.split("ETA")[0]):
            stream.write(("\r" + text.ljust(WIDTH)) if tty else text + "\n")
            stream.flush()
            shown = text
        time.sleep(POLL_S)


def cancel(client: Callable[[], Client], exp_id: int) -> dict[str, Any]:
    """Ask labd to cancel the experiment and wait until it has (its set stopped)."""
    sys.stderr.write("\ncancelling the experiment (its finished runs are kept)...\n")
    e = client().experiment(exp_id)
    if e["state"] in LIVE:
        e = client().cancel_experiment(exp_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while e["state"] in LIVE and time.monotonic() < deadline:
        time.sleep(POLL_S)
        e = client().experiment(exp_id)
    return e
