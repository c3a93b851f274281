"""What a killed labd leaves behind besides its sets' processes, cleared at the next start.

- ``manager-PID`` directories (the Manager server's private socket directory, see
  :mod:`labd.manager_host`): removed when labd PID is really gone, that is no process
  has that pid, or the one that has it started after the directory was last written
  (the pid was reused);
- ``/dev/shm/sem.mp-*`` semaphores of multiprocessing (a set's locks and queues) whose
  creator died before its resource tracker could unlink them: removed only when a dead
  labd left a directory above, only this user's, only those made before this labd
  started and mapped by no process at all (an unmapped semaphore can no longer be used: every
  process that opens one keeps it mapped while it holds it).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger("labd.remains")
SHM = Path("/dev/shm")


def clear_remains(parent: Path) -> tuple[int, int]:
    """Remove what dead labds left in ``parent`` and /dev/shm; (directories, semaphores)."""
    stale = stale_manager_dirs(parent)
    if not stale:
        return 0, 0
    now = time.time()  # this labd made no semaphore yet
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    sems = orphan_semaphores(now)
    for sem in sems:
        try:
            sem.unlink()
        except OSError:
            continue
    log.warning(
        "removed what %d killed labd(s) left: their Manager directories%s",
        len(stale),
        f" and {len(sems)} orphaned semaphore(s)" if sems else "",
    )
    return len(stale), len(sems)


def stale_manager_dirs(parent: Path) -> list[Path]:
    """``manager-PID`` directories in ``parent`` whose labd is gone."""
    import psutil

    found = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        pid_text = entry.name.removeprefix("manager-")
        if entry.name == pid_text or not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            written = entry.stat().st_mtime
            started = psutil.Process(int(pid_text)).create_time()
        except psutil.NoSuchProcess:
            started = None
        except (OSError, psutil.Error):
            continue
        if started is None or started > written:
            found.append(entry)
    return found


def orphan_semaphores(before: float) -> list[Path]:
    """This user's multiprocessing semaphores made before ``before`` that no process maps."""
    uid = os.getuid()
    candidates = {}
    try:
        entries = list(os.scandir(SHM))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith("sem.mp-"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue  # gone meanwhile
        if st.st_uid == uid and st.st_mtime <= before:
            candidates[entry.name] = Path(entry.path)
    if candidates:
        for name in mapped_shm():
            candidates.pop(name, None)
    return list(candidates.values())


def mapped_shm() -> set[str]:
    """Names of /dev/shm entries some process maps (those we can read the maps of)."""
    names: set[str] = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps") as f:
                maps = f.read()
        except OSError:
            continue
        for line in maps.splitlines():
            at = line.find("/dev/shm/")
            if at >= 0:
                names.add(line[at + 9 :].removesuffix(" (deleted)").strip())
    return names
