"""What labd does under storage faults and kills: figures to compare two trees.

    sudo python bench/storage_faults.py                      # the installed labd
    sudo PYTHONPATH=/path/to/copy python bench/storage_faults.py   # another tree's

Three probes, each with a private labd in a temporary directory:

- ``disk``: its state dir on an 8 MiB tmpfs (needs root to mount), filled while a set
  runs: what a spawn and a stop answer, how many samples of the outage and printer
  lines reach the history once space is freed;
- ``lock``: another process holds the history's write lock: how long a spawn and a stop
  take and what they answer;
- ``kill``: five SIGKILLs of labd's whole process group with three sets each: the
  figures of the interrupted sets at the next start, the ``manager-PID`` directories
  left (``sem.mp-*`` counts every new one in /dev/shm: on a shared host, not only ours).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rpyc.utils.factory import unix_connect


class Labd:
    def __init__(self, root: Path, state: Path) -> None:
        self.root, self.state = root, state
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Any:
        labd = shutil.which("labd") or "labd"
        cmd = [labd, "--socket", str(self.root / "s.sock"), "--state-dir", str(self.state)]
        with open(self.root / "labd.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        for _ in range(600):
            try:
                return unix_connect(str(self.root / "s.sock"), config={"sync_request_timeout": 90})
            except OSError:
                time.sleep(0.05)
        raise SystemExit("labd did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(90)


def attempt(call: Any, *args: Any) -> str:
    began = time.monotonic()
    try:
        out = call(*args)
        said = "ok " + str(out)[:60]
    except Exception as exc:  # what labd answered, first line
        said = str(exc).splitlines()[0][:110]
    return f"{time.monotonic() - began:.2f} s: {said}"


def samples_between(db: Path, set_id: int, start: float, end: float) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        query = "SELECT COUNT(*) FROM samples WHERE set_id = ? AND at > ? AND at < ?"
        return int(conn.execute(query, (set_id, start, end)).fetchone()[0])
    finally:
        conn.close()


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    for size in (1 << 16, 4096, 1):
        try:
            while True:
                os.write(fd, b"\0" * size)
        except OSError:
            pass
    os.close(fd)


def probe_disk(root: Path) -> None:
    disk = root / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], check=True)
    labd = Labd(root, disk / "state")
    try:
        c = labd.start()
        sid = json.loads(c.root.spawn("shared", 1, '{"interval": "0.01", "printers": "16"}'))["id"]
        time.sleep(2)
        fill(disk)
        full_at = time.time()
        time.sleep(4)
        print("disk: spawn while full: " + attempt(c.root.spawn, "queue", 1, "{}"))
        printed = json.loads(c.root.tail(sid, 0, 1))["last"]
        print("disk: stop while full: " + attempt(c.root.stop, (sid,)))
        os.unlink(disk / "filler")
        freed = time.time()
        time.sleep(4)
        kept = samples_between(disk / "state" / "history.sqlite3", sid, full_at, freed)
        logs = (disk / "state" / "logs").glob(f"set-{sid}.log*")
        lines = sum(p.read_bytes().count(b"\n") for p in logs)
        print(f"disk: samples of the {freed - full_at:.1f} s without space kept: {kept}")
        print(f"disk: printer lines: at least {printed} printed, {lines} in the log files")
        c.close()
    finally:
        labd.stop()
        subprocess.run(["umount", str(disk)], check=False)


def probe_lock(root: Path) -> None:
    labd = Labd(root, root / "state")
    db = root / "state" / "history.sqlite3"
    hold = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
    )
    locker = None
    try:
        c = labd.start()
        sid = json.loads(c.root.spawn("shared", 1, '{"interval": "0.01"}'))["id"]
        time.sleep(1.5)
        locker = subprocess.Popen(
            [sys.executable, "-c", hold, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert locker.stdout is not None
        locker.stdout.readline()
        for n in (1, 2):
            print(f"lock: spawn {n} under the lock: " + attempt(c.root.spawn, "queue", 1, "{}"))
        print("lock: stop under the lock: " + attempt(c.root.stop, (sid,)))
        c.close()
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()
            for pipe in (locker.stdin, locker.stdout):
                if pipe is not None:
                    pipe.close()
        labd.stop()


def probe_kill(root: Path) -> None:
    labd = Labd(root, root / "state")
    sets = (
        ("shared", 2, '{"interval": "0", "lock": "yes"}'),
        ("queue", 2, '{"interval": "0.01"}'),
        ("manager", 1, '{"interval": "0.01"}'),
    )
    shm = set(os.listdir("/dev/shm"))
    ids = []
    for _ in range(5):
        c = labd.start()
        ids += [json.loads(c.root.spawn(*spec))["id"] for spec in sets]
        time.sleep(2.5)
        c.close()
        assert labd.proc is not None
        os.killpg(labd.proc.pid, signal.SIGKILL)
        labd.proc.wait()
        time.sleep(1.5)

    def new_sems() -> int:
        return sum(1 for n in set(os.listdir("/dev/shm")) - shm if n.startswith("sem.mp-"))

    dirs = len(list(root.glob("manager-*")))
    print(f"kill: after 5 kills: {dirs} manager-PID dirs, {new_sems()} new sem.mp-*")
    c = labd.start()
    found = json.loads(c.root.status(tuple(ids)))
    zero = sum(1 for s in found if s["attempted"] == 0)
    print(f"kill: interrupted sets {len(found)}, of them with attempted 0: {zero}")
    dirs = len(list(root.glob("manager-*")))
    print(f"kill: after the next start: {dirs} manager-PID dir(s), {new_sems()} new sem.mp-*")
    c.close()
    labd.stop()


def main() -> int:
    probes = {"disk": probe_disk, "lock": probe_lock, "kill": probe_kill}
    chosen = sys.argv[1:] or list(probes)
    for name in chosen:
        root = Path(tempfile.mkdtemp(prefix="iplf"))
        try:
            probes[name](root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
