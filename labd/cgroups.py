"""Containment: where the host delegates a cgroup to labd, each set runs in a cgroup of
its own, which ``cgroup.kill`` ends whole: nothing a set started escapes it, whatever it
does (setsid, a double fork, a scrubbed environment). Elsewhere labd keeps to process
groups and child subreapers (:mod:`labd.leftovers`).

A cgroup counts as delegated when it is labd's own cgroup v2 (the ``0::`` line of
/proc/self/cgroup), not the hierarchy's root, writable by labd, with ``cgroup.kill``
(Linux 5.14), and labd is alone in it at start: systemd's ``Delegate=yes`` gives a unit
exactly that. labd then arranges it as::

    OWN/daemon     labd, its forkserver, Manager server and resource tracker
    OWN/set-ID     one set's workers and everything they start

(processes only in leaves: cgroup v2's no-internal-processes rule). Each worker enters
its set's cgroup first thing (:func:`labd.worker.process.join_cgroup`), before any code
of the set's plugin runs; a stop or shutdown ends with ``cgroup.kill`` of the set's
cgroup, and a start kills every ``set-*`` cgroup a dead labd left.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from labd.errors import LabError

log = logging.getLogger("labd.cgroups")
CGROUP = "cgroup"  # the two kinds of containment, as version() reports them
PGROUP = "pgroup"
EMPTY_WAIT_S = 2.0  # for a killed cgroup to empty, before it is removed


@dataclass(frozen=True)
class Containment:
    kind: str = PGROUP
    root: Path | None = None  # labd's own delegated cgroup, with kind == CGROUP
    why: str = "not asked for"  # why process groups only

    @classmethod
    def setup(cls) -> Containment:
        """Take labd's delegated cgroup if there is one: move labd into ``daemon`` and
        kill what dead labds left in ``set-*``; else process groups. Said once in the log.
        Call before labd starts any process (they stay in the cgroup they started in)."""
        root, why = delegated()
        if root is None:
            log.info("containment: pgroup (no delegated cgroup: %s)", why)
            return cls(PGROUP, None, why)
        try:
            (root / "daemon").mkdir(exist_ok=True)
            (root / "daemon" / "cgroup.procs").write_text("0")
        except OSError as exc:
            why = f"cannot move labd into {root / 'daemon'}: {exc.strerror}"
            log.warning("containment: pgroup (%s)", why)
            return cls(PGROUP, None, why)
        found = cls(CGROUP, root, "")
        ended = sum(found.end_set(int(d.name[4:])) for d in found._set_dirs())
        log.info("containment: cgroup (a cgroup per set under %s)", root)
        if ended:
            log.warning("killed %d process(es) left in the cgroups of a dead labd's sets", ended)
        return found

    def make(self, set_id: int) -> str:
        """The cgroup a set's workers join ('' with process groups)."""
        if self.root is None:
            return ""
        path = self.root / f"set-{set_id}"
        self.end_set(set_id)  # a dead labd's of the same id, if any (ids are not reused)
        try:
            path.mkdir()
        except OSError as exc:
            raise LabError(
                f"cannot make the cgroup {path} for set {set_id}: {exc.strerror}"
            ) from None
        return str(path)

    def end_set(self, set_id: int) -> int:
        """Kill whatever is left in a set's cgroup and remove it; how many were killed."""
        if self.root is None:
            return 0
        path = self.root / f"set-{set_id}"
        if not path.is_dir():
            return 0
        left = [pid for d, _, _ in os.walk(path) for pid in _procs(Path(d))]
        if left:
            try:
                (path / "cgroup.kill").write_text("1")
            except OSError as exc:
                log.error("set %d: cannot kill its cgroup %s: %s", set_id, path, exc.strerror)
            log.warning("set %d: killed %d process(es) left in its cgroup", set_id, len(left))
        deadline = time.monotonic() + EMPTY_WAIT_S
        while _populated(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        for d, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):  # leaves first
            try:
                os.rmdir(d)
            except OSError as exc:
                log.warning("set %d: cannot remove the cgroup %s: %s", set_id, d, exc.strerror)
        return len(left)

    def _set_dirs(self) -> list[Path]:
        assert self.root is not None
        return [d for d in self.root.glob("set-*") if d.name[4:].isdigit() and d.is_dir()]


def delegated() -> tuple[Path | None, str]:
    """labd's own cgroup if it may arrange it (see module doc); else None and why not."""
    mount = cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy mounted"
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, "cannot read /proc/self/cgroup"
    own = next((line[3:] for line in lines if line.startswith("0::")), None)
    if not own or own == "/":
        return None, "labd runs in the root cgroup"
    path = mount / own.lstrip("/")
    if not (path / "cgroup.kill").exists():
        return None, f"no cgroup.kill in {path} (Linux 5.14 or later has it)"
    if not os.access(path, os.W_OK) or not os.access(path / "cgroup.procs", os.W_OK):
        return None, f"{path} is not delegated to labd (systemd: Delegate=yes)"
    others = [pid for pid in _procs(path) if pid != os.getpid()]
    if others:
        return None, f"{path} holds other processes too ({len(others)})"
    return path, ""


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified in the
    hybrid layout), if it is."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    return Path(fields[4])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _procs(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _populated(path: Path) -> bool:
    try:
        return "populated 1" in (path / "cgroup.events").read_text()
    except OSError:
        return False
