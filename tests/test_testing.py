"""labd.testing, the kit shipped for plugin authors: its checks fail when they should,
and it stays usable without pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import psutil
import pytest

from labd.testing import (
    check_accounting,
    marked_processes,
    shm_entries,
    shm_mapped,
    wait_gone,
)

LIVE: dict[str, Any] = {
    "id": 1,
    "mechanism": "queue",
    "state": "running",
    "value": 90,
    "attempted": 100,
    "lost": 0,
    "in_flight": 10,
    "corrupt": 0,
}


def test_a_consistent_live_record_passes() -> None:
    check_accounting(LIVE)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lost": 3}, r"lost 3 != attempted 100 - value 90 - in_flight 10"),
        ({"value": 110, "in_flight": -10}, r"negative in_flight"),
        ({"state": "stopped"}, r"10 still in flight after the set ended"),
        (
            {"state": "stopped", "in_flight": 0, "lost": 10, "per_counter": [50, 49]},
            r"per_counter \[50, 49\] sums to 99, not 100",
        ),
    ],
)
def test_each_broken_rule_is_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_accounting({**LIVE, **change})


def test_a_stopped_record_with_its_per_counter_passes() -> None:
    stopped = {**LIVE, "state": "stopped", "in_flight": 0, "lost": 10}
    check_accounting(stopped, per_counter=[60, 40])


def test_a_marked_process_is_found_until_it_ends() -> None:
    marker = f"labd-testing-{os.getpid()}"
    env = {**os.environ, "LABD_TESTING_MARK": marker}
    child = subprocess.Popen(["sleep", "30"], env=env)
    try:
        found = marked_processes("LABD_TESTING_MARK", marker)
        assert [p.pid for p in found] == [child.pid]
        assert wait_gone(found, 0.1) == found  # still running
    finally:
        child.kill()
        child.wait()
    assert wait_gone(found, 5.0) == []
    assert marked_processes("LABD_TESTING_MARK", marker) == []


def test_a_mapped_shm_segment_is_seen() -> None:
    from multiprocessing import shared_memory

    segment = shared_memory.SharedMemory(create=True, size=4096)
    try:
        assert segment.name.lstrip("/") in shm_entries()
        assert segment.name.lstrip("/") in shm_mapped([psutil.Process()])
    finally:
        segment.close()
        segment.unlink()


def test_importing_it_does_not_import_pytest() -> None:
    code = "import sys, labd.testing; print('pytest' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
