"""Nothing a set started outlives it: a plugin's helper that forks without exec (so its
marker never shows in /proc/PID/environ), leaves the set's group with setsid, double
forks, or scrubs its environment is ended at stop, at shutdown, and when labd is killed
(by the worker as it goes, or by the next labd for workers that could not act)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from daemonkit import DaemonFactory, fakes_env
from helpers import Daemon, describe, kill_all, wait_for
from hostile import ESCAPES, HOOKS

from labd.testing import running

pytestmark = pytest.mark.daemon


class Escapees:
    """One set per way of escaping, each with one helper; the helpers, once running."""

    def __init__(self, d: Daemon, piddir: Path) -> None:
        self.daemon = d
        conn = d.connect()
        self.sets = []
        for escape in ESCAPES:
            params = json.dumps({"interval": 0.05, "escape": escape, "piddir": str(piddir)})
            self.sets.append(json.loads(conn.root.spawn("escaping", 1, params)))
        conn.close()
        files = [piddir / f"helper-{s['id']}" for s in self.sets]
        wait_for(lambda: all(f.exists() for f in files), 20, "every set's helper to start")
        self.helpers = [psutil.Process(int(f.read_text())) for f in files]
        self.workers = [psutil.Process(p["pid"]) for s in self.sets for p in s["processes"]]

    def assert_helpers_end(self, when: str) -> None:
        left: list[psutil.Process] = []

        def gone() -> bool:
            nonlocal left
            left = running(self.helpers)
            return not left

        try:
            wait_for(gone, 10, "the helpers to end")
        except AssertionError:
            raise AssertionError(f"helpers outlived their set {when}: {describe(left)}") from None


@pytest.fixture
def escapees(labd_factory: DaemonFactory, tmp_path: Path) -> Iterator[Escapees]:
    d = labd_factory(env=fakes_env(HOOKS))
    found = Escapees(d, tmp_path)
    yield found
    kill_all(found.helpers)  # whatever the test found, nothing stays behind


def test_helpers_end_with_their_set_at_stop(escapees: Escapees) -> None:
    conn = escapees.daemon.connect()
    conn.root.stop(tuple(s["id"] for s in escapees.sets))
    conn.close()
    escapees.assert_helpers_end("at stop")


def test_helpers_end_at_shutdown(escapees: Escapees) -> None:
    assert escapees.daemon.stop(signal.SIGTERM) == 0
    escapees.assert_helpers_end("at shutdown")


def test_helpers_end_when_labd_is_killed(escapees: Escapees) -> None:
    escapees.daemon.send(signal.SIGKILL)
    escapees.daemon.wait()
    escapees.assert_helpers_end("after a kill -9 of labd")


def test_helpers_of_hung_workers_end_at_the_next_start(
    escapees: Escapees, labd_factory: DaemonFactory
) -> None:
    # hung sets: workers and their launchers (which lead the sets' groups) cannot end
    # their helpers themselves
    hung = list({w.parent() for w in escapees.workers}) + escapees.workers
    for p in hung:
        p.send_signal(signal.SIGSTOP)
    try:
        first = escapees.daemon
        wait_for(
            lambda: all(p.status() == psutil.STATUS_STOPPED for p in hung),
            5,
            "the sets' processes to stop",
        )
        first.send(signal.SIGKILL)
        first.wait()
        assert len(running(escapees.helpers)) == len(ESCAPES)
        labd_factory(env=fakes_env(HOOKS), state_dir=first.state_dir)
        escapees.assert_helpers_end("after a kill -9 of labd and a restart")
    finally:
        kill_all(hung)
