"""labctl lesson end to end: the real labctl against a real labd, non-interactive
(``--auto --json``), through every step of the tour; and the race step ten times in a
row, each time with a loss (the lesson's race must show every time, honestly)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from daemonkit import DaemonFactory
from helpers import labctl_command

pytestmark = pytest.mark.daemon
SAFE = ("one", "lock", "manager", "join", "queue")


def lesson(address: str, home: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    env.update(XDG_RUNTIME_DIR=str(home), XDG_STATE_HOME=str(home / "state"))
    done = subprocess.run(
        [*labctl_command(), "--connect", address, "lesson", *args],
        capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


@pytest.mark.timeout(180)
def test_the_tour_runs_every_step_with_real_sets(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    address = f"unix:{labd_factory().socket}"
    steps = {s["step"]: s for s in lesson(address, tmp_path, "--auto", "--json")}
    assert list(steps) == ["one", "race", "lock", "manager", "join", "queue", "pipe"]
    assert all(s["held"] for s in steps.values()), steps
    race = steps["race"]["figures"][0]
    assert race["lost"] > 0 and "window=0.05" in race["variant"], race
    assert f"labctl explain {race['id']}" in steps["race"]["verdict"]
    for name in SAFE:
        assert all(f["lost"] == 0 for f in steps[name]["figures"]), steps[name]
    own, shared = steps["pipe"]["figures"]
    assert own["corrupt"] == 0 and shared["corrupt"] > 0 and shared["lost"] == 0
    assert all(s["sets"] for s in steps.values())
    assert "Ten counters racing" in lesson(address, tmp_path, "--list")


@pytest.mark.timeout(240)
def test_the_race_step_loses_updates_ten_times_in_a_row(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    address = f"unix:{labd_factory().socket}"
    for run in range(10):
        (step,) = lesson(address, tmp_path, "race", "--json")
        figures = step["figures"][0]
        assert step["held"] and figures["lost"] > 0, (run, step)


def test_an_unknown_step_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [*labctl_command(), "--no-autostart", "lesson", "nosuch"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2 and "no step 'nosuch'" in done.stderr
