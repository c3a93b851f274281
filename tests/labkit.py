"""In-process Labs for the unit tests of the core: real child processes (forkserver), a
real history store in a temporary state dir, fake mechanisms through the registry seam.
The ``make_lab`` fixture (conftest.py) is :func:`lab_maker`."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from fakes import BrokenSetup, CrashingCounter, FakeCounter
from helpers import short_dir, wait_for

from labd.lab import Lab, Limits
from labd.registry import Registry
from labd.testing import running

FAST = {"interval": 0.05}
MakeLab = Callable[..., Lab]


def lab_maker(tmp_path: Path) -> Iterator[MakeLab]:
    """Start Labs on ``tmp_path/state`` (by default); close each one at the end and
    check that none of its processes (workers, Manager) outlives it."""
    labs: list[Lab] = []

    def make(
        state_dir: Path | None = None,
        registry: Registry | None = None,
        limits: Limits | None = None,
    ) -> Lab:
        lab = Lab(
            state_dir or tmp_path / "state",
            registry=registry
            if registry is not None
            else Registry.of(FakeCounter, CrashingCounter, BrokenSetup),
            limits=limits or Limits(),
            runtime_dir=short_dir(),
        )
        lab.start()
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        close(lab)


_closed: weakref.WeakSet[Lab] = weakref.WeakSet()  # not id(): ids get reused


def close(lab: Lab) -> None:
    """Close a Lab once; every process it started must be gone afterwards."""
    if lab in _closed:
        return
    _closed.add(lab)
    pids = [p["pid"] for s in lab.status() for p in lab.inspect(s["id"])["processes"]]
    manager = lab.manager.pid
    procs = [psutil.Process(pid) for pid in [*pids, manager] if pid and psutil.pid_exists(pid)]
    lab.close()
    wait_for(lambda: not running(procs), 5.0, "the Lab's processes (workers, Manager) to end")


def one(lab: Lab, set_id: int) -> dict[str, Any]:
    """A set's status with its processes one by one (inspect: status is one row)."""
    return dict(lab.inspect(set_id))


def spawn(lab: Lab, counters: int = 2, mechanism: str = "fake", **params: Any) -> int:
    status = lab.spawn(mechanism, counters, {**FAST, **params})
    return int(status["id"])


def pids(status: dict[str, Any], role: str | None = None) -> list[int]:
    return [p["pid"] for p in status["processes"] if role in (None, p["role"])]
