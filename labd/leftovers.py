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
  as it exits, or when labd dies; once a second the tracker records every live set's
  descendants (pids and creation times, in the store too, for a later labd), and
  :meth:`Tracker.end_set` ends those left at the set's stop (a killed worker's).

No cgroup is used: a host that delegates one (systemd's ``Delegate=``) could hold each
set in its own, but the subreapers already close every escape a process can make by
itself (see tests/test_escapes.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable

from labd.store import Store
from labd.worker import process as worker_process

log = logging.getLogger("labd.leftovers")


def record_workers(store: Store, set_id: int, pids: list[int]) -> None:
    """Note a set's workers with their creation times, for :func:`end_leftovers`."""
    import psutil

    rows = []
    for pid in pids:
        try:
            rows.append((pid, psutil.Process(pid).create_time()))
        except psutil.Error:
            continue  # already gone: nothing to end later
    store.add_workers(set_id, rows)


def end_leftovers(store: Store, set_ids: list[int]) -> int:
    """Kill what is left of sets a dead daemon ran (a hung or stopped worker that could
    not notice), with its set's process group: what its workers started goes too. A
    pid counts only if its creation time matches (pids get reused); a group only if
    its leader was one of the set's workers, and one of them still lives in it (so its
    number cannot have been reused)."""
    import psutil

    rows = store.workers(set_ids)
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


#: live sets as the tracker sees them: set id -> pids of its workers still running
Members = dict[int, set[int]]
TRACK_EVERY = 1.0  # seconds between scans


def become_subreaper() -> None:
    if not worker_process.become_subreaper():
        log.warning("cannot become a child subreaper: a helper that escapes its set may outlive it")


class Tracker:
    """Records what each set started and ends it with its set (see module doc).

    Only processes recorded as a set's descendants are ever signalled or reaped: labd
    may be embedded in a process with children of its own (a test run), which are not
    the tracker's business.
    """

    def __init__(self, store: Store, members: Callable[[], Members]) -> None:
        self._store = store
        self._members = members
        self._lock = threading.Lock()
        self._helpers: dict[int, dict[int, float]] = {}  # set id -> {pid: creation time}
        self._killed: set[int] = set()  # helpers ended, to reap if they were adopted
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._reap_killed()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(TRACK_EVERY):
            try:
                self.scan()
            except Exception:
                log.exception("tracking the sets' processes")

    def scan(self) -> None:
        """Record new descendants of live sets; reap the helpers labd adopted and ended."""
        members = self._members()
        table = worker_process.parents()
        with self._lock:
            for set_id, pids in members.items():
                self._record(set_id, worker_process.descendants(pids, table) - pids)
        self._reap_killed()

    def _record(self, set_id: int, pids: set[int]) -> None:
        import psutil

        known = self._helpers.setdefault(set_id, {})
        rows = []
        for pid in pids - set(known):
            try:
                known[pid] = psutil.Process(pid).create_time()
            except psutil.Error:
                continue
            rows.append((pid, known[pid]))
        if rows:
            self._store.add_workers(set_id, rows)  # for a labd after this one

    def end_set(self, set_id: int) -> int:
        """SIGKILL the helpers recorded for a set whose workers have all ended (those
        whose worker was killed came back to labd, a subreaper: reaped here too)."""
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
        self._reap_killed()
        return ended

    def _reap_killed(self) -> None:
        for pid in list(self._killed):
            if _reap(pid):
                self._killed.discard(pid)


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
