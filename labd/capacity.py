"""Whether this machine can hold a spawn, asked before a single process starts.

labd's own limits (``--max-per-set``, ``--max-processes``) default high, so that the
machine is the limit; this module says when it is, with the reason, instead of letting
a set fail half-started (a fork refused, a file not opened, the OOM killer):

- memory: what the new workers would take (one worker's unique memory, as measured on
  the sets running, else :data:`DEFAULT_WORKER_BYTES`) against ``MemAvailable`` less a
  reserve;
- tasks: each worker is a few kernel tasks (its threads), against the kernel's
  ``threads-max`` and ``pid_max``, the cgroup's ``pids.max``, and (not for root, whom the
  kernel does not hold to it) ``ulimit -u``;
- open files: labd holds a descriptor or two per worker, against its ``ulimit -n``.

A set's launchers (labd.launch: one, or one per core for a large set) count too: each is
a process of about a worker's size, one task, and a report pipe in labd.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from labd.errors import LimitError
from labd.procstats import read_uss

DEFAULT_WORKER_BYTES = 8 << 20  # before any worker was measured (one is ~5 MiB here)
MIN_WORKER_BYTES = 4 << 20  # a worker just started has not touched all it will
TASKS_PER_WORKER = 3  # main thread, labd watch, and a feeder or display thread
FILES_PER_WORKER = 2  # its sentinel, and a pipe end while it starts
RESERVE_FRACTION = 0.05  # memory left to everything else: 5 % of it, at least...
RESERVE_MIN = 256 << 20  # ... 256 MiB


@dataclass(frozen=True)
class Machine:
    """What is free now (None: no such limit)."""

    mem_available: int | None
    mem_total: int | None
    tasks: list[tuple[str, int]]  # (which limit, tasks still free under it)
    files_limit: int
    files_open: int


def probe() -> Machine:
    meminfo = _meminfo()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return Machine(
        mem_available=meminfo.get("MemAvailable"),
        mem_total=meminfo.get("MemTotal"),
        tasks=_task_room(),
        files_limit=soft,
        files_open=len(os.listdir("/proc/self/fd")),
    )


def check(workers: int, worker_bytes: int, machine: Machine, launchers: int = 0) -> None:
    """Raise :class:`LimitError` naming the first limit ``workers`` more, started by
    ``launchers``, would break."""
    processes = workers + launchers
    what = f"{processes} more processes" + (
        f" ({workers} workers, {launchers} launchers)" if launchers else ""
    )
    if machine.mem_available is not None:
        reserve = max(RESERVE_MIN, int((machine.mem_total or 0) * RESERVE_FRACTION))
        need, room = processes * worker_bytes, machine.mem_available - reserve
        if need > room:
            raise LimitError(
                f"this machine cannot hold {what}: they need about "
                f"{_mib(need)} of memory ({_mib(worker_bytes)} each), "
                f"{_mib(max(0, room))} is available (less a reserve of {_mib(reserve)})"
            )
    tasks = workers * TASKS_PER_WORKER + launchers
    for limit, free in machine.tasks:
        if tasks > free:
            raise LimitError(
                f"this machine cannot hold {what}: they need about "
                f"{tasks} tasks (threads), {limit} leaves {max(0, free)}"
            )
    if machine.files_limit != resource.RLIM_INFINITY:
        free = machine.files_limit - machine.files_open
        files = workers * FILES_PER_WORKER + launchers
        if files > free:
            raise LimitError(
                f"labd cannot hold {what}: it needs about "
                f"{files} open files for them, its limit of "
                f"{machine.files_limit} (ulimit -n) leaves {max(0, free)} "
                "(raise LimitNOFILE= or ulimit -Hn)"
            )


def worker_bytes(pids: list[int], before: int) -> int:
    """One worker's unique memory, from a few of ``pids`` (a set just started), never
    below :data:`MIN_WORKER_BYTES`; ``before`` if none could be read."""
    sizes = [n for n in (read_uss(pid) for pid in pids[:: max(1, len(pids) // 4)][:4]) if n]
    return max(MIN_WORKER_BYTES, sum(sizes) // len(sizes)) if sizes else before


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _task_room() -> list[tuple[str, int]]:
    room = []
    total = _tasks_running()
    if total is not None:
        for name in ("threads-max", "pid_max"):
            cap = _read_int(f"/proc/sys/kernel/{name}")
            if cap is not None:
                room.append((f"the kernel's {name} of {cap}", cap - total))
    cgroup = _cgroup_dir()
    if cgroup is not None:
        cap, used = _read_int(f"{cgroup}/pids.max"), _read_int(f"{cgroup}/pids.current")
        if cap is not None and used is not None:
            room.append((f"the cgroup's pids.max of {cap}", cap - used))
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if os.geteuid() != 0 and soft != resource.RLIM_INFINITY:
        room.append((f"ulimit -u of {soft}", soft - _user_tasks(os.geteuid())))
    return room


def _tasks_running() -> int | None:
    """Kernel scheduling entities (threads) on the machine: /proc/loadavg's 4th field."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
    except (OSError, IndexError, ValueError):
        return None


def _cgroup_dir() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                path = "/sys/fs/cgroup" + line[3:].strip()
                return path if os.path.exists(f"{path}/pids.max") else None
    except OSError:
        pass
    return None


def _user_tasks(uid: int) -> int:
    """Threads of every process of ``uid`` (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid == uid:
                count += len(os.listdir(f"/proc/{entry.name}/task"))
        except OSError:
            continue
    return count
