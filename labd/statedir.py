"""The state directory's guards: one labd per directory, and what a dead one left."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from labd.errors import ConfigError
from labd.store import Store

log = logging.getLogger("labd.lab")


def lock_state_dir(state_dir: Path) -> int:
    """One labd per state directory: a second one would take the first one's running
    sets for leftovers of a dead daemon. The lock dies with the process."""
    import fcntl

    fd = os.open(state_dir / "labd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"another labd (pid {holder}) uses the state directory {state_dir}: "
            "give each labd its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


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
