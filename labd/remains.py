"""What a killed labd leaves behind besides its sets' processes, cleared at the next start.

- ``manager-PID`` directories (the Manager server's private socket directory, see
  :mod:`labd.manager_host`) and ``mp-PID`` directories (multiprocessing's temporary
  directory, with the forkserver's socket, see :func:`private_mp_temp_dir`): removed
  when labd PID is really gone, that is no process has that pid, or the one that has
  it started after the directory was last written (the pid was reused);
- ``/dev/shm/sem.mp-*`` semaphores of multiprocessing (a set's locks and queues) whose
  creator died before its resource tracker could unlink them. Only a labd's *own*: each
  labd records the semaphores it holds in its state directory (:func:`record_semaphores`,
  after each spawn, as it records its workers' pids), and the next labd of that state
  directory (one at a time: :func:`labd.statedir.lock_state_dir`) removes those its dead
  predecessor recorded (:func:`clear_semaphores`). Several labds of one user on one host
  never touch each other's semaphores, also while one closes its queues.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger("labd.remains")
SHM = Path("/dev/shm")
PREFIX = "sem.mp-"  # multiprocessing's semaphores (SemLock names "/mp-...")
RECORD = "semaphores"  # in the state directory: one name a line


PRIVATE = ("manager-", "mp-")  # a labd's own directories, named after its pid
#: the longest unix socket path (sun_path, NUL included: 108 bytes on Linux)
SUN_PATH_MAX = 107


def clear_remains(parent: Path) -> int:
    """Remove the directories dead labds left in ``parent``; how many."""
    stale = stale_private_dirs(parent)
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    if stale:
        log.warning(
            "removed what %d killed labd(s) left: their Manager and multiprocessing directories",
            len({d.name.rpartition("-")[2] for d in stale}),
        )
    return len(stale)


def private_mp_temp_dir(parent: Path) -> Path | None:
    """Give multiprocessing a temporary directory of this labd's own, ``parent/mp-PID``.

    multiprocessing keeps the forkserver's listening socket in its temporary directory,
    by default a fresh ``/tmp/pymp-*`` removed only when labd exits normally: a killed
    labd left one behind each time, socket and all. In ``parent`` (labd's runtime or
    state directory) the next labd removes it (:func:`clear_remains`), and a normal
    exit still does. Must run before anything in labd asks multiprocessing for its
    temporary directory. Where the socket's path would be too long for a unix socket,
    multiprocessing keeps its default (None is returned).
    """
    from multiprocessing import process, util

    config = process.current_process()._config  # type: ignore[attr-defined]
    if "tempdir" in config:
        return None  # already chosen, and maybe in use
    d = parent / f"mp-{os.getpid()}"
    if len(os.fsencode(d / "listener-xxxxxxxx")) > SUN_PATH_MAX:
        return None
    d.mkdir(mode=0o700, exist_ok=True)
    config["tempdir"] = str(d)
    util.Finalize(None, shutil.rmtree, args=(str(d), True), exitpriority=-100)
    return d


def stale_private_dirs(parent: Path) -> list[Path]:
    """``manager-PID`` and ``mp-PID`` directories in ``parent`` whose labd is gone."""
    import psutil

    found = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        prefix = next((p for p in PRIVATE if entry.name.startswith(p)), "")
        pid_text = entry.name.removeprefix(prefix)
        if not prefix or not pid_text.isdigit() or int(pid_text) == os.getpid():
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


def clear_semaphores(state_dir: Path) -> int:
    """Unlink the semaphores the dead labd of ``state_dir`` recorded, before this labd
    records any: those that still exist, are this user's, and no process maps (a hung
    worker of the dead labd not yet ended keeps its own; they stay recorded and go at a
    later start). Returns how many were removed."""
    recorded = _read_record(state_dir)
    left = {n: ino for n, ino in _semaphores().items() if n in recorded}
    if left:
        mapped = mapped_shm()  # one pass over /proc, only when something is left
        left = {n: ino for n, ino in left.items() if ino not in mapped}
    removed = 0
    for name in left:
        try:
            (SHM / name).unlink()
            removed += 1
        except OSError:
            continue
    _write_record(state_dir, recorded & set(_semaphores()))
    if removed:
        log.warning("removed %d semaphore(s) a killed labd left in %s", removed, SHM)
    return removed


def record_semaphores(state_dir: Path) -> None:
    """Record the semaphores this labd maps now (its sets' locks and queues), with those
    recorded before that still exist (a predecessor's still held by a hung worker)."""
    mine = _mapped_by(os.getpid())
    existing = _semaphores()
    names = {n for n, ino in existing.items() if ino in mine}
    _write_record(state_dir, names | (_read_record(state_dir) & set(existing)))


def _semaphores() -> dict[str, int]:
    """This user's multiprocessing semaphores in /dev/shm: name -> inode."""
    found = {}
    try:
        entries = list(os.scandir(SHM))
    except OSError:
        return {}
    for entry in entries:
        if entry.name.startswith(PREFIX):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if st.st_uid == os.getuid():
                found[entry.name] = st.st_ino
    return found


def _read_record(state_dir: Path) -> set[str]:
    try:
        text = (state_dir / RECORD).read_text()
    except OSError:
        return set()
    return {n for n in text.split() if n.startswith(PREFIX) and "/" not in n}


def _write_record(state_dir: Path, names: set[str]) -> None:
    path = state_dir / RECORD
    try:
        if not names:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{RECORD}.tmp")
        tmp.write_text("".join(f"{n}\n" for n in sorted(names)))
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot record this labd's semaphores in %s: %s", path, exc.strerror)


def mapped_shm() -> set[int]:
    """Inodes of the /dev/shm files some process maps (those we can read the maps of).
    By inode, not name: a semaphore's creator maps it under glibc's temporary name
    (``sem.XXXXXX (deleted)``), linked to its real name only after."""
    inodes: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            inodes |= _mapped_by(int(entry.name))
    return inodes


def _mapped_by(pid: int) -> set[int]:
    """Inodes of the /dev/shm files process ``pid`` maps."""
    try:
        dev = os.stat(SHM).st_dev
        with open(f"/proc/{pid}/maps") as f:
            maps = f.read()
    except OSError:
        return set()
    shm_dev = f"{os.major(dev):02x}:{os.minor(dev):02x}"
    inodes = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[3] == shm_dev and fields[5].startswith("/dev/shm/"):
            inodes.add(int(fields[4]))
    return inodes
