"""Process entry points of a set's workers (module level, so spawn and forkserver can
pickle them by reference). Kept light: the forkserver preloads it."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import os
import select
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from labd.worker import board
from labd.worker.contexts import CounterContext, PrinterContext, WorkerSpec

EXIT_DAEMON_GONE = 70
EXIT_CANNOT_START = 71  # e.g. no thread to watch labd with, at the process limit
#: in every worker's environment (so in its helpers' too): which labd and set it is of
SET_VAR = "IPCLAB_SET"
_GONE_WAIT = 1.0  # seconds a worker whose stop pipe closed waits to see labd gone
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
CLONE_FILES = 0x400  # <linux/sched.h>


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children again (not init's): what
    a worker's helper starts stays in the worker's tree even if it double-forks or
    calls setsid, so the worker (or labd, the next subreaper up) can end it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def parents(group: int = 0, members: set[int] | None = None) -> dict[int, int]:
    """Every visible process's parent: pid -> ppid (from /proc/PID/stat); the pids in
    process group ``group`` are added to ``members`` if given."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rfind(b")") + 2 :].split()
        out[int(entry.name)] = int(fields[1])
        if members is not None and int(fields[2]) == group:
            members.add(int(entry.name))
    return out


def descendants(roots: set[int], table: dict[int, int] | None = None) -> set[int]:
    """The pids below ``roots`` in the process tree (``roots`` excluded)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in (parents() if table is None else table).items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for kid in children.get(todo.pop(), ()):
            if kid not in found and kid not in roots:
                found.add(kid)
                todo.append(kid)
    return found


def end_descendants(rounds: int = 5, whole_group: bool = False) -> int:
    """SIGKILL everything below this process (a subreaper: its helpers' orphans come back
    to it, so a helper cannot slip away by forking while we kill), and reap what is ours.
    ``whole_group``: below every process of our group too (the set's other workers may
    be killed with the group before they end their own helpers)."""
    ended = 0
    me = os.getpid()
    if not whole_group and not has_children():
        return 0  # the usual case: no scan of /proc (orphans come back to us as children)
    for _ in range(rounds):
        roots = {me}
        table = parents(os.getpgrp(), roots if whole_group else None)
        below = descendants(roots, table)
        if not below:
            break
        for pid in below:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                ended += 1
        _reap_children()
    return ended


def has_children() -> bool:
    """Whether this process has a child, alive or not yet reaped (nothing is reaped)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


GROUP_WAIT_S = 5.0  # seconds a worker waits for its set's group to exist


def _at_eof(conn: Connection) -> bool:
    """Readable with nothing to read: every write end is closed. Reads nothing, as the
    pipe's one stop request is for every worker of the role."""
    try:
        if not conn.poll():
            return False
        pending = fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return True
    return int.from_bytes(pending, sys.byteorder) == 0


def watch_daemon(pid: int, own_group: bool = False) -> Callable[[Connection], None]:
    """End this worker at once when the daemon is gone, whatever the worker is doing;
    in the set's own group, end the whole group (what its workers started too).

    Returns a check for the worker's way out: a loop may end first because labd's
    pipes closed, and the group must still go.
    """

    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        daemon_gone(own_group)  # already gone (or no pidfd): do not linger

    def wait() -> None:
        own_fd_table(fd)
        select.select([fd], [], [])
        daemon_gone(own_group)

    def check(wake: Connection) -> None:
        # the stop pipe at EOF with no request in it: labd closed it, or is dying now
        # (its files close before its pidfd reports it): give the pidfd a moment
        wait = _GONE_WAIT if _at_eof(wake) else 0.0
        if select.select([fd], [], [], wait)[0]:
            daemon_gone(own_group)

    threading.Thread(target=wait, name="daemon-watch", daemon=True).start()
    return check


def own_fd_table(*keep: int) -> bool:
    """Give the calling thread a descriptor table of its own, holding only ``keep`` and
    0-2 (False where the kernel or a seccomp filter refuses: nothing else changes).

    While two threads share a table, the kernel takes and drops a reference on the file
    at every system call on a descriptor (``fdget``/``fput``); with a table of its own
    a thread skips that. The watch thread needs only the daemon's pidfd, so it takes
    the table's copy (``unshare(CLONE_FILES)``) and closes the rest of it: the worker's
    own table is again the main thread's alone, its files held only there (closing one
    closes the file). Measured in a flat-out pipe set: the counters' system time a
    message fell from 1.14 to 1.02-1.03 of the bare loop's (bench/README.md, round
    0.4.6). A thread the worker starts later shares the main thread's table again.

    The collector is off meanwhile: an object it finalizes from this thread (a
    connection in a cycle, say) would close its descriptor in the copy, not where the
    worker holds it.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        if hasattr(os, "unshare"):  # Python 3.12+
            os.unshare(CLONE_FILES)
        elif ctypes.CDLL(None, use_errno=True).unshare(CLONE_FILES) != 0:
            return False
        low = 3
        for fd in sorted(k for k in keep if k >= low):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        return True
    except (OSError, AttributeError):
        return False
    finally:
        if collecting:
            gc.enable()


def daemon_gone(own_group: bool) -> NoReturn:
    """labd is gone: end this process, and what it started. The group's leader (the
    set's launcher) ends what is below every process of the group, then the group; the
    others end their own, and stand in for a leader that cannot act (gone, or stopped).
    One pass over /proc per set, not per worker."""
    acting = own_group and _leads_or_stands_in()
    end_descendants(whole_group=acting)
    if acting:
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGKILL)  # this process included
    os._exit(EXIT_DAEMON_GONE)


def _leads_or_stands_in() -> bool:
    """This worker leads its group, or the leader cannot end the group itself."""
    leader = os.getpgrp()
    if leader == os.getpid():
        return True
    try:
        with open(f"/proc/{leader}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # the leader is gone
    return stat[stat.rfind(b")") + 2 :][:1] in (b"T", b"t", b"Z", b"X")  # stopped or dead


def join_set_group(pgid: int, patience: float = GROUP_WAIT_S) -> bool:
    """Enter the set's own process group (lead it if ``pgid`` is 0), so labd can end the
    whole set, anything its workers started included, with one ``killpg``, and a Ctrl-C
    on labd's terminal reaches labd alone. Failing that (False), the worker stays put.

    A set's first launcher leads the group; its other launchers join it (a launcher that
    starts before the group exists waits here, up to ``patience``); workers are born in
    their launcher's group. ``pgid`` -1: stay put, in no group of the set's own."""
    deadline = time.monotonic() + patience
    while True:
        try:
            os.setpgid(0, pgid)
            return True
        except PermissionError:  # EPERM: no such group yet (its leader is starting)
            if not pgid or time.monotonic() >= deadline:
                return False
            time.sleep(0.001)
        except OSError:
            return False


def join_cgroup(path: str) -> None:
    """Move this process into the set's cgroup (what it starts from now on is born there)."""
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write("0")


def set_marker(daemon_pid: int, set_id: int) -> str:
    """The value of SET_VAR in a set's workers, and in what they start."""
    return f"{daemon_pid}:{set_id}"


def _prepare(spec: WorkerSpec, out: Connection) -> Callable[[Connection], None]:
    """Set the worker up; returns the check to run on its way out (see watch_daemon)."""
    if spec.cgroup:
        join_cgroup(spec.cgroup)
    own_group = join_set_group(spec.pgid)
    become_subreaper()
    os.environ[SET_VAR] = set_marker(spec.daemon_pid, spec.set_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # labd stops us, in order
    # in a group of its own, the worker is in the background of labd's terminal, if
    # any: with `stty tostop` a write to it would stop the worker, unless ignored
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.dup2(out.fileno(), 1)
    out.close()
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as we do
    if spec.daemon_pid:
        return watch_daemon(spec.daemon_pid, own_group)
    return lambda wake: None


def run(
    spec: WorkerSpec,
    mechanism: Any,
    slots: Any,
    wake: Connection,
    out: Connection,
    args: tuple[Any, ...],
) -> None:
    """Run one counter or printer of a set."""
    try:
        on_exit = _prepare(spec, out)
    except (RuntimeError, OSError) as exc:  # no thread at the process limit; no cgroup
        name = f"set {spec.set_id} {spec.role} {spec.index}"
        print(f"ipclab worker ({name}): cannot start: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_CANNOT_START)
    view = board.view(slots)
    try:
        if spec.role == "counter":
            mechanism.counter(CounterContext(spec, view, wake), *args)
            return
        ctx = PrinterContext(spec, view, wake, messages=bool(mechanism.messages))
        try:
            mechanism.printer(ctx, *args)
        finally:
            ctx.finish()
    finally:
        on_exit(wake)
        end_descendants()  # nothing this worker started outlives it
