"""Shared fixtures: a real ``labd`` per test (or per module), a plain rpyc client, and a
session guard that fails the run if any process or /dev/shm segment is left behind.

Every process this session starts inherits ``IPCLAB_TEST_SESSION=<uuid>`` in its
environment, so the guard finds exactly our own leftovers, not those of other people
running labd on the same machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import rpyc
from daemonkit import DaemonFactory, one_daemon
from diskfaults import DiskFault, disk_fault_of, tmpfs
from helpers import (
    SESSION_VAR,
    Daemon,
    describe,
    kill_all,
    mounts_in_short_dirs,
    remove_short_dirs,
    stop_own_multiprocessing_helpers,
    wait_for,
)
from labkit import MakeLab, lab_maker
from redis_server import RedisServer

from labd.testing import ShmWatch, marked_processes, running, shm_entries

SESSION = os.environ.setdefault(SESSION_VAR, uuid.uuid4().hex)
LEFTOVER_GRACE = 5.0


# --- the session guard ------------------------------------------------------------------
def _labd_like() -> set[int]:
    """This user's processes whose command line mentions forkserver or labd."""
    out = set()
    uid = os.getuid()
    for p in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if p.info["uids"] and p.info["uids"].real != uid:
                continue
            cmd = " ".join(p.info["cmdline"] or ())
        except psutil.Error:
            continue
        if "forkserver" in cmd or "labd" in cmd or "ipclab" in cmd:
            out.add(p.pid)
    return out


@pytest.fixture(scope="session", autouse=True)
def no_strays(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the session if it leaves a process or a /dev/shm entry behind."""
    shm_before = shm_entries()
    others_before = _labd_like()
    watch = ShmWatch()
    watch.start()
    yield
    problems = stop_own_multiprocessing_helpers()
    left: list[psutil.Process] = []

    def ours_gone() -> bool:
        nonlocal left
        left = marked_processes(SESSION_VAR, SESSION)
        return not left

    try:
        wait_for(ours_gone, LEFTOVER_GRACE, "this session's processes to end")
    except AssertionError:
        problems.append(f"processes started by this test session still run: {describe(left)}")
        kill_all(left)
    watch.stop()
    new_shm: set[str] = set()

    def shm_clean() -> bool:
        nonlocal new_shm
        new_shm = (shm_entries() - shm_before) & watch.seen
        return not new_shm

    try:
        wait_for(shm_clean, LEFTOVER_GRACE, "new /dev/shm entries of ours to go")
    except AssertionError:
        problems.append(f"/dev/shm entries our processes held remain: {sorted(new_shm)}")
    notes = []
    strangers = running(
        psutil.Process(pid) for pid in _labd_like() - others_before if psutil.pid_exists(pid)
    )
    if strangers:  # not ours (no marker): most likely another session on this machine
        notes.append(
            f"new labd/forkserver processes not started by this session: {describe(strangers)}"
        )
    unknown = shm_entries() - shm_before - watch.seen
    if unknown:
        notes.append(f"new /dev/shm entries none of our processes held: {sorted(unknown)}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for note in notes:
        line = f"note (probably another session on this machine): {note}"
        if reporter is not None:
            reporter.write_line(line, yellow=True)
        else:
            sys.stderr.write(line + "\n")
    if os.environ.get("IPCLAB_TEST_DEBUG_SHM"):
        sys.stderr.write(f"\n/dev/shm entries our processes held: {sorted(watch.seen)}\n")
    mounts = mounts_in_short_dirs()
    if mounts:
        problems.append(f"filesystems a test mounted are still mounted: {mounts}")
        for where in reversed(mounts):
            subprocess.run(["umount", "-l", where], check=False)
    remove_short_dirs()
    if problems:
        pytest.fail(
            "the test session left things behind:\n  " + "\n  ".join(problems), pytrace=False
        )


# --- real daemons (tests/daemonkit.py) -------------------------------------------------
@pytest.fixture
def labd_factory() -> Iterator[DaemonFactory]:
    factory = DaemonFactory()
    try:
        yield factory
    finally:
        factory.finish()


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """An 8 MiB tmpfs for one test (tests/diskfaults.py); request it before labd_factory."""
    with tmpfs() as where:
        yield where


@pytest.fixture(params=["disk full", "I/O error"])
def disk_fault(request: pytest.FixtureRequest) -> Iterator[DiskFault]:
    """A real disk fault switched on and off by the test: a full tmpfs, or EIO from a
    FUSE filesystem (tests/diskfaults.py); request it before labd_factory."""
    with disk_fault_of(request.param) as fault:
        yield fault


@pytest.fixture
def labd_daemon(labd_factory: DaemonFactory) -> Daemon:
    """A fresh labd (with the fake mechanisms registered) for one test."""
    return labd_factory(fakes=True)


@pytest.fixture
def rpc(labd_daemon: Daemon) -> Iterator[rpyc.Connection]:
    """A plain rpyc client connected to ``labd_daemon``."""
    conn = labd_daemon.connect()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def module_labd() -> Iterator[Daemon]:
    """One labd shared by a module's tests (for those that do not interfere)."""
    yield from one_daemon(fakes=True)


@pytest.fixture
def module_rpc(module_labd: Daemon) -> Iterator[rpyc.Connection]:
    conn = module_labd.connect()
    yield conn
    conn.close()


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """Start in-process Labs on ``tmp_path/state``; each is closed at the end and none
    of its processes (workers, Manager) may outlive it (see labkit.py)."""
    yield from lab_maker(tmp_path)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session (unix socket, no persistence); its slow
    Pub/Sub subscribers are dropped at 256 KiB of backlog, so a stall loses messages fast."""
    server = RedisServer(["--client-output-buffer-limit", "pubsub 256kb 128kb 1"])
    try:
        yield server
    finally:
        server.stop()
