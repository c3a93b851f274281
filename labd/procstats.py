"""CPU and memory of worker processes, read straight from ``/proc`` (one open and read
per process, no psutil objects kept): cheap enough for a thousand processes.

Who pays for what (docs/operating.md, "Sampling"): labd samples a set's figures 10
times a second whatever its size, but its processes' CPU and RSS only while someone
looks at them: once a second for the sets inspected in the last :data:`WATCH_S`
seconds, and at the moment of an ``inspect``. Unique memory (USS, from
``smaps_rollup``) is read only by ``inspect`` and when a spawn measures what a worker
costs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: a set's processes are sampled once a second for this long after an inspect
WATCH_S = 30.0
_FRESH_S = 0.25  # a reading younger than this is reused rather than taken again


def read_stat(pid: int) -> tuple[float, int, float] | None:
    """(CPU seconds used, RSS bytes, start time in seconds since boot), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    # after "pid (comm) ": state is field 3, so field k is at index k - 3
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return cpu, int(fields[21]) * PAGE_SIZE, int(fields[19]) / CLOCK_TICKS


def read_uss(pid: int) -> int | None:
    """Unique set size in bytes (private pages), None if gone or unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            text = f.read()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith((b"Private_Clean:", b"Private_Dirty:", b"Private_Hugetlb:")):
            total += int(line.split()[1]) * 1024
    return total


def uptime() -> float:
    with open("/proc/uptime", "rb") as f:
        return float(f.read().split()[0])


class ProcStats:
    """CPU % (over the time between two readings) and RSS of processes, by pid."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        #: pid -> (when read, CPU seconds then, CPU % or None, RSS)
        self._last: dict[int, tuple[float, float, float | None, int]] = {}

    def update(self, pids: Iterable[int]) -> None:
        """One pass over ``pids``; forget every other pid."""
        wanted = set(pids)
        with self._lock:
            for pid in [p for p in self._last if p not in wanted]:
                del self._last[pid]
        for pid in wanted:
            self._read(pid)

    def read(self, pids: Iterable[int]) -> dict[int, tuple[float | None, int | None]]:
        """(CPU %, RSS) of each pid now: over the last second for a watched set, else
        the average over the process's life so far."""
        out: dict[int, tuple[float | None, int | None]] = {}
        now = self._clock()
        boot_age: float | None = None
        for pid in pids:
            with self._lock:
                last = self._last.get(pid)
            if last is not None and now - last[0] < _FRESH_S and last[2] is not None:
                out[pid] = (last[2], last[3])
                continue
            entry = self._read(pid)
            if entry is None:
                out[pid] = (None, None)
                continue
            cpu_pct, rss, cpu, started = entry
            if cpu_pct is None:  # first reading: the lifetime average
                boot_age = uptime() if boot_age is None else boot_age
                age = boot_age - started
                cpu_pct = round(cpu / age * 100, 1) if age > 0 else 0.0
            out[pid] = (cpu_pct, rss)
        return out

    def _read(self, pid: int) -> tuple[float | None, int, float, float] | None:
        stat = read_stat(pid)
        now = self._clock()
        with self._lock:
            if stat is None:
                self._last.pop(pid, None)
                return None
            cpu, rss, started = stat
            last = self._last.get(pid)
            pct = None
            if last is not None and now > last[0]:
                pct = round(max(0.0, cpu - last[1]) / (now - last[0]) * 100, 1)
            self._last[pid] = (now, cpu, pct, rss)
            return pct, rss, cpu, started
