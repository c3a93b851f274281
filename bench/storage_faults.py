"""What labd does under storage faults and kills: figures to compare two trees.

    sudo python bench/storage_faults.py                      # the installed labd
    sudo PYTHONPATH=/path/to/copy python bench/storage_faults.py   # another tree's

Probes, each with a private labd in a temporary directory (name them to run only some):

- ``disk``: its state dir on an 8 MiB tmpfs (needs root to mount), filled while a set
  runs: what a spawn and a stop answer, how many samples of the outage and printer
  lines reach the history once space is freed; ``eio``: the same on the tests' FUSE
  filesystem failing writes with EIO (tests/eiofs.py);
- ``exp-full``, ``exp-eio``, ``exp-lock``: an experiment of 12 runs, the disk failing
  (full, EIO) or the write lock held by another process for 4 s after its second run:
  what a new compare answers, how the experiment ends, what the file keeps, how many
  tracebacks labd logged;
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


class Disk:
    """labd's state dir on a disk that fails on demand (root needed to mount it): an
    8 MiB tmpfs filled to the last byte (``full``), or the tests' FUSE filesystem that
    fails writes with EIO (``eio``, tests/eiofs.py)."""

    def __init__(self, root: Path, kind: str) -> None:
        self.kind = kind
        self.eio: Any = None
        if kind == "eio":
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from eiofs import EioDisk

            self.eio = EioDisk(root)
            self.path = self.eio.path
        else:
            self.path = root / "disk"
            self.path.mkdir()
            mount = ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(self.path)]
            subprocess.run(mount, check=True)

    def on(self) -> None:
        if self.eio is not None:
            self.eio.fail("write")
            return
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
        os.close(fd)

    def off(self) -> None:
        if self.eio is not None:
            self.eio.heal()
        else:
            os.unlink(self.path / "filler")

    def close(self) -> None:
        if self.eio is not None:
            self.eio.close()
        else:
            subprocess.run(["umount", str(self.path)], check=False)


class ForeignLock:
    """Another process holding the history's write lock while on (the Disk interface)."""

    HOLD = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
        " c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()"
    )

    def __init__(self, root: Path) -> None:
        self.path = root / "plain"
        self.locker: subprocess.Popen[str] | None = None

    def on(self) -> None:
        db = self.path / "state" / "history.sqlite3"
        self.locker = subprocess.Popen(
            [sys.executable, "-c", self.HOLD, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.locker.stdout is not None
        self.locker.stdout.readline()

    def off(self) -> None:
        if self.locker is not None:
            self.locker.kill()
            self.locker.wait()
            for pipe in (self.locker.stdin, self.locker.stdout):
                if pipe is not None:
                    pipe.close()
            self.locker = None

    def close(self) -> None:
        self.off()


def probe_disk(root: Path, kind: str = "full") -> None:
    disk = Disk(root, kind)
    labd = Labd(root, disk.path / "state")
    try:
        c = labd.start()
        sid = json.loads(c.root.spawn("shared", 1, '{"interval": "0.01", "printers": "16"}'))["id"]
        time.sleep(2)
        disk.on()
        full_at = time.time()
        time.sleep(4)
        print(f"{kind}: spawn while failing: " + attempt(c.root.spawn, "queue", 1, "{}"))
        printed = json.loads(c.root.tail(sid, 0, 1))["last"]
        print(f"{kind}: stop while failing: " + attempt(c.root.stop, (sid,)))
        disk.off()
        freed = time.time()
        time.sleep(4)
        kept = samples_between(disk.path / "state" / "history.sqlite3", sid, full_at, freed)
        logs = (disk.path / "state" / "logs").glob(f"set-{sid}.log*")
        lines = sum(p.read_bytes().count(b"\n") for p in logs)
        print(f"{kind}: samples of the {freed - full_at:.1f} s of failure kept: {kept}")
        print(f"{kind}: printer lines: at least {printed} printed, {lines} in the log files")
        c.close()
    finally:
        labd.stop()
        disk.close()


def probe_experiment(root: Path, kind: str) -> None:
    """An experiment of 12 short runs; the disk fails (or another process holds the
    write lock) after its second run, for 4 s."""
    disk: Disk | ForeignLock = ForeignLock(root) if kind == "lock" else Disk(root, kind)
    labd = Labd(root, disk.path / "state")
    spec = json.dumps({"cases": ["shared"], "seconds": 0.3, "warmup": 0.1, "repeat": 12})
    tag = f"exp-{kind}"
    try:
        c = labd.start()
        exp = json.loads(c.root.compare(spec))["id"]
        until(lambda: json.loads(c.root.experiment(exp))["progress"]["done"] >= 2, 60)
        disk.on()
        print(f"{tag}: compare while failing: " + attempt(c.root.compare, spec))
        time.sleep(4)
        print(f"{tag}: the experiment while failing: " + attempt(c.root.experiment, exp))
        disk.off()
        ended = until(lambda: json.loads(c.root.experiment(exp))["state"] != "running", 90)
        e = json.loads(c.root.experiment(exp))
        done = sum(1 for r in e["runs"] if r["state"] == "done")
        print(f"{tag}: after: {e['state']} ({e['error']}), runs done {done} of 12" + ended)
        print(f"{tag}: labd serves after: " + attempt(c.root.compare, spec))
        c.close()
        db = disk.path / "state" / "history.sqlite3"
        row = stored_experiment(db, exp)
        print(f"{tag}: in the file: {row}")
        traces = (root / "labd.log").read_text().count("Traceback")
        print(f"{tag}: tracebacks in labd's log: {traces}")
    finally:
        labd.stop()
        disk.close()


def until(cond: Any, within: float) -> str:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if cond():
                return ""
        except Exception as exc:
            return f" [{str(exc).splitlines()[0][:80]}]"
        time.sleep(0.2)
    return f" [not within {within:.0f} s]"


def stored_experiment(db: Path, exp: int) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        state = conn.execute("SELECT state FROM experiments WHERE id = ?", (exp,)).fetchone()
        runs = conn.execute(
            "SELECT COUNT(*) FROM experiment_runs WHERE experiment_id = ? AND result_json"
            " IS NOT NULL",
            (exp,),
        ).fetchone()
        return f"state {state[0] if state else None}, {runs[0]} runs with results"
    finally:
        conn.close()


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
    probes: dict[str, Any] = {
        "disk": probe_disk,
        "eio": lambda root: probe_disk(root, "eio"),
        "lock": probe_lock,
        "kill": probe_kill,
        "exp-full": lambda root: probe_experiment(root, "full"),
        "exp-eio": lambda root: probe_experiment(root, "eio"),
        "exp-lock": lambda root: probe_experiment(root, "lock"),
    }
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
