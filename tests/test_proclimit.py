"""At the per-user process limit (``ulimit -u``), the spawn that hits it fails alone, in
one line that names the limit; running sets, the Manager and labd go on, and the next
spawn (with room again) gets a new forkserver.

labd runs with an ordinary *real* uid, which is what RLIMIT_NPROC counts, and without
CAP_SYS_RESOURCE and CAP_SYS_ADMIN (which would exempt it); its effective uid stays 0 so
it can still execute this machine's interpreter, wherever that is installed."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import threading
from collections.abc import Iterator

import psutil
import pytest
from daemonkit import DaemonFactory, fakes_env
from helpers import Daemon, short_dir, wait_for

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching uids needs root"),
]
UID = 64123  # an account nobody uses: its tasks are labd's alone
LIMIT = 400  # labd's ulimit -u
ROOM = 40  # tasks the limit leaves labd once its first sets run and the hog holds the rest
PR_CAPBSET_DROP = 24
CAP_SYS_ADMIN, CAP_SYS_RESOURCE = 21, 24


def _as_limited_user(limit: int) -> None:
    """In the child, before exec: no exemption, the limit, the ordinary real uid."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_SYS_ADMIN, CAP_SYS_RESOURCE):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    os.setresuid(UID, 0, 0)


class LimitedDaemon(Daemon):
    """labd as an ordinary user under a process limit of ``limit``."""

    def __init__(self, limit: int, **kw: object) -> None:
        root = short_dir()
        (root / "run").mkdir(mode=0o700)
        os.chown(root / "run", UID, -1)  # labd's socket directory is its own user's
        kw.setdefault("preexec", lambda: _as_limited_user(limit))
        super().__init__(root=root, socket_name="run/labd.sock", **kw)  # type: ignore[arg-type]
        self.limit = limit


def _tasks(uid: int) -> int:
    """Tasks (processes and threads) whose real uid is ``uid``, as RLIMIT_NPROC counts."""
    total = 0
    for p in psutil.process_iter(["uids", "num_threads"]):
        if p.info["uids"] is not None and p.info["uids"].real == uid:
            total += p.info["num_threads"]
    return total


@contextlib.contextmanager
def hog(threads: int) -> Iterator[None]:
    """Another process of the same user, holding ``threads`` tasks of its limit."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec; threads that wait until the pipe closes
        try:
            os.close(hold_w)
            os.close(ready_r)
            os.setresuid(UID, 0, 0)
            for _ in range(threads):
                threading.Thread(target=os.read, args=(hold_r, 1), daemon=True).start()
            os.write(ready_w, b"r")
            os.read(hold_r, 1)
        finally:
            os._exit(0)
    os.close(ready_w)
    try:
        assert os.read(ready_r, 1) == b"r", "the hog did not start"
        yield
    finally:
        os.close(hold_w)
        os.close(hold_r)
        os.close(ready_r)
        os.waitpid(pid, 0)


@pytest.mark.timeout(120)
def test_the_spawn_at_the_process_limit_fails_alone_and_says_so(
    labd_factory: DaemonFactory,
) -> None:
    d = LimitedDaemon(LIMIT, env=fakes_env())
    labd_factory.daemons.append(d)
    d.start()
    conn = d.connect()
    try:
        managed = json.loads(conn.root.spawn("manager", 1, '{"interval": 0.01}'))["id"]
        fake = json.loads(conn.root.spawn("fake", 1, '{"interval": 0.01}'))["id"]
        with (
            hog(LIMIT - _tasks(UID) - ROOM),
            pytest.raises(Exception, match=r"process limit is reached \(ulimit -u \d+;") as err,
        ):
            conn.root.spawn("fake", 2 * ROOM, '{"interval": 0.01}')
        assert "unexpected EOF" not in str(err.value)
        running = json.loads(conn.root.status((managed, fake)))
        assert [s["state"] for s in running] == ["running", "running"], running
        before = [s["attempted"] for s in running]

        def counting() -> bool:
            now = json.loads(conn.root.status((managed, fake)))
            assert all(s["state"] == "running" for s in now), now
            return all(s["attempted"] > b + 20 for s, b in zip(now, before, strict=True))

        wait_for(counting, 20, "the running sets to go on")
        again = json.loads(conn.root.spawn("fake", 1, '{"interval": 0.01}'))
        assert again["state"] == "running"
        stopped = json.loads(conn.root.stop("all"))
        assert all(s["state"] == "stopped" for s in stopped), stopped
    finally:
        conn.close()
