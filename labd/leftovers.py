"""Leftovers: the daemon's side of ipclab's promise that nothing a set started outlives it.

Every set is its own process group, led by its first worker; every worker carries the
set's marker (:data:`labd.worker.process.SET_VAR`) and watches labd, killing its whole
group when labd is gone (:func:`labd.worker.process.watch_daemon`). On this side:

- :func:`record_workers`: a set's worker pids and creation times go to the store while
  it runs, so a later labd can find them;
- :func:`sweep_group`: after an orderly stop, whatever is left in the set's group and
  carries its marker (a plugin's helpers) is SIGKILLed;
- :func:`end_leftovers`: at start, what is left of sets a dead labd ran is ended, with
  its process group.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

from labd.errors import HistoryError
from labd.procstats import read_stat
from labd.worker import process as worker_process

if TYPE_CHECKING:
    from labd.history import History

log = logging.getLogger("labd.leftovers")


def record_workers(store: History, set_id: int, pids: list[int]) -> None:
    """Note a set's workers with their creation times, for :func:`end_leftovers`."""
    boot = _boot_time()
    rows = []
    for pid in pids:
        stat = read_stat(pid)  # one read each, not a psutil object: a set may be large
        if stat is not None:  # else already gone: nothing to end later
            rows.append((pid, boot + stat[2]))
    store.add_workers(set_id, rows)


def _boot_time() -> float:
    """The boot time psutil's ``create_time`` counts from (``btime`` of /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime"):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def end_leftovers(store: History, set_ids: list[int]) -> int:
    """Kill what is left of sets a dead daemon ran (a hung or stopped worker that could
    not notice), with its set's process group: what its workers started goes too. A
    pid counts only if its creation time matches (pids get reused); a group only if
    its leader was one of the set's workers, and one of them still lives in it (so its
    number cannot have been reused)."""
    import psutil

    try:
        rows = store.workers(set_ids)
    except HistoryError as exc:
        log.error("the processes of sets %s cannot be read: %s", set_ids, exc.message)
        return 0
    workers = {(set_id, pid) for set_id, pid, _ in rows}
    ended = 0
    for set_id, pid, created in rows:
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) > 0.01:
                continue
            group = os.getpgid(pid)
            if (set_id, group) in workers:
                os.killpg(group, signal.SIGKILL)
            else:
                proc.kill()
            ended += 1
            log.warning("set %d: ended leftover process %d", set_id, pid)
        except (psutil.Error, ProcessLookupError):
            continue
    for set_id in set_ids:
        store.forget_workers(set_id)
    return ended


def sweep_group(pgid: int, set_id: int) -> int:
    """SIGKILL what a set's workers left in its group ``pgid`` once they have all ended.
    The group's number may have been reused once the group emptied, so only processes
    that carry this set's marker (inherited from the worker) are ended."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return 0  # an empty group: the usual case
    marker = worker_process.set_marker(os.getpid(), set_id)
    left = group_members(pgid, worker_process.SET_VAR, marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    if left:
        log.warning("set %d: killed %d process(es) its workers left behind", set_id, len(left))
    return len(left)


def group_members(pgid: int, var: str, value: str) -> list[int]:
    """Pids in process group ``pgid`` whose environment has ``var=value``."""
    wanted = f"{var}={value}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pgid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if wanted in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue  # gone, or not ours to read
    return found
