"""Shared fixtures: a real ``labd`` per test (or per module), a plain rpyc client, and a
session guard that fails the run if any process or /dev/shm segment is left behind.

Every process this session starts inherits ``IPCLAB_TEST_SESSION=<uuid>`` in its
environment, so the guard finds exactly our own leftovers, not those of other people
running labd on the same machine.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import rpyc
from helpers import (
    SESSION_VAR,
    TESTS,
    Daemon,
    ShmWatch,
    alive,
    describe,
    kill_all,
    remove_short_dirs,
    session_processes,
    shm_entries,
    stop_own_multiprocessing_helpers,
    wait_for,
)

SESSION = os.environ.setdefault(SESSION_VAR, uuid.uuid4().hex)
LEFTOVER_GRACE = 5.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: end to end with a real labd and real labctl")
    config.addinivalue_line("markers", "daemon: starts a real labd or real processes")


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
        left = session_processes(SESSION)
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
    strangers = alive(
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
    remove_short_dirs()
    if problems:
        pytest.fail(
            "the test session left things behind:\n  " + "\n  ".join(problems), pytrace=False
        )


# --- real daemons ----------------------------------------------------------------------
def fakes_env(extra: str = "") -> dict[str, str]:
    """labd's environment with the fake mechanisms of tests/fakes.py registered through
    ``LABD_EXTRA_MECHANISMS`` (the real registry path for unpackaged plugins)."""
    from fakes import EXTRA_MECHANISMS

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["LABD_EXTRA_MECHANISMS"] = ",".join(filter(None, [EXTRA_MECHANISMS, extra]))
    return env


class DaemonFactory:
    """Starts labd processes and reaps every one of them (and their children)."""

    def __init__(self) -> None:
        self.daemons: list[Daemon] = []

    def __call__(
        self,
        args: tuple[str, ...] = (),
        *,
        fakes: bool = False,
        env: dict[str, str] | None = None,
        start: bool = True,
        **kw: Any,
    ) -> Daemon:
        if env is None and fakes:
            env = fakes_env()
        d = Daemon(args, env=env, **kw)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def finish(self) -> None:
        """SIGTERM each daemon still running: it must exit 0 and leave nothing behind."""
        errors = []
        for d in self.daemons:
            if d.proc is None:
                continue
            try:
                if d.returncode is None:
                    code = d.stop(signal.SIGTERM)
                    assert code == 0, f"labd exited with {code} on SIGTERM:\n{d.log_text()}"
                    assert not os.path.exists(d.socket), f"labd left its socket {d.socket}"
                d.assert_no_leftovers()
                d.assert_clean_log()
            except AssertionError as exc:
                errors.append(str(exc))
            finally:
                d.kill_everything()
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def labd_factory() -> Iterator[DaemonFactory]:
    factory = DaemonFactory()
    try:
        yield factory
    finally:
        factory.finish()


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


def one_daemon(**kw: Any) -> Iterator[Daemon]:
    """For a fixture: one labd (``kw`` as for DaemonFactory), checked and reaped after."""
    factory = DaemonFactory()
    try:
        yield factory(**kw)
    finally:
        factory.finish()


@pytest.fixture(scope="module")
def module_labd() -> Iterator[Daemon]:
    """One labd shared by a module's tests (for those that do not interfere)."""
    yield from one_daemon(fakes=True)


@pytest.fixture
def module_rpc(module_labd: Daemon) -> Iterator[rpyc.Connection]:
    conn = module_labd.connect()
    yield conn
    conn.close()
