"""Leftovers: the daemon's side of ipclab's promise that nothing a set started outlives it.

Every set is its own process group, led by its first worker; every worker carries the
set's marker (:data:`labd.worker.process.SET_VAR`) and watches labd, killing its whole
group when labd is gone (:func:`labd.worker.process.watch_daemon`). On this side:

- :func:`record_workers`: a set's worker pids and creation times go to the store while
  it runs, so a later labd can find them;
- :func:`sweep_group`: after an orderly stop, whatever is left in the set's group and
  carries its marker (a plugin's helpers) is SIGKILLed;
- :func:`end_leftovers`: at start, what is left of sets a dead labd ran is ended, with
  its process group;
- :class:`Tracker`: labd (:func:`become_subreaper`, called by the daemon) and every
  worker are child subreapers (``PR_SET_CHILD_SUBREAPER``), so a helper that
  double-forks, calls setsid or scrubs its environment still comes back to its worker,
  or to labd once the worker is gone: never to init. Each worker ends its descendants
  as it exits, or when labd dies; at a stop labd notes what is below the set's workers
  and ends it once they are gone (what a hung or killed worker could not end), and at
  start :func:`end_leftovers` ends what is below a dead labd's hung workers.

Where the host delegates a cgroup (systemd's ``Delegate=yes``), each set also runs in a
cgroup of its own (:mod:`labd.cgroups`), which ends what no subreaper is left to bring
back (helpers whose labd and workers were all SIGKILLed; tests/test_cgroups.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
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
    ended = _end_descendants_of({pid for _, pid, created in rows if _same_process(pid, created)})
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


def _end_descendants_of(pids: set[int]) -> int:
    """SIGKILL what the (hung) workers ``pids`` started: it is still below them, as each
    worker is a subreaper. First, before the workers go (their orphans would go to init)."""
    if not pids:
        return 0
    below = worker_process.descendants(pids) - pids
    for pid in below:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            log.warning("ended leftover process %d, started by a set's worker", pid)
    return len(below)


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


#: sets as the tracker sees them: set id -> pids of its workers still running
Members = dict[int, set[int]]


def become_subreaper() -> None:
    if not worker_process.become_subreaper():
        log.warning("cannot become a child subreaper: a helper that escapes its set may outlive it")


class Tracker:
    """What the sets being stopped started, ended with them (see module doc).

    Only processes found below a set's workers are ever signalled or reaped: labd may be
    embedded in a process with children of its own (a test run), which are not the
    tracker's business. One pass over /proc per stop call, not a periodic scan (a pass
    costs 30-300 ms on a busy host with a thousand processes).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._helpers: dict[int, dict[int, float]] = {}  # set id -> {pid: creation time}
        self._killed: set[int] = set()  # helpers ended, to reap if they were adopted

    def scan(self, members: Members) -> None:
        """Note what the workers of these sets (set id -> worker pids) started, now."""
        if not members:
            return
        table = worker_process.parents()
        for set_id, pids in members.items():
            found = _created(worker_process.descendants(pids, table) - pids)
            with self._lock:
                self._helpers.setdefault(set_id, {}).update(found)

    def end_set(self, set_id: int) -> int:
        """SIGKILL what was found below a set's workers once they have all ended (what a
        killed worker left came back to labd, a subreaper: it is reaped here)."""
        with self._lock:
            helpers = self._helpers.pop(set_id, {})
        ended = 0
        for pid, created in helpers.items():
            if _same_process(pid, created):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    ended += 1
                    self._killed.add(pid)
        if ended:
            log.warning("set %d: killed %d process(es) its workers started", set_id, ended)
        self.reap()
        return ended

    def reap(self) -> None:
        """Reap the ended helpers that labd adopted (zombies otherwise)."""
        for pid in list(self._killed):
            if _reap(pid):
                self._killed.discard(pid)


def _created(pids: set[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out[pid] = psutil.Process(pid).create_time()
    return out


def _same_process(pid: int, created: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - created) <= 0.01
    except psutil.Error:
        return False


def _reap(pid: int) -> bool:
    """Reap ``pid`` if it is a zombie child of labd's; True once there is nothing left
    to wait for (reaped now, or never labd's child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # not ours to wait for, or already reaped
    return done == pid
