"""A stop fits the budget systemd gives labd (TimeoutStopSec): sets drain what they can,
are ended at the deadline, and their final figures are recorded either way."""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from daemonkit import DaemonFactory
from helpers import wait_for

from labd.protocol import SHUTDOWN_MARGIN_S, TIMEOUT_STOP_S
from labd.unit import render

#: a queue far too full to drain within a few seconds (large payloads, flat out)
FLOOD = '{"interval": 0, "maxsize": 1000000, "payload": 4096}'
STOP_TIMEOUT = 8.0
BACKLOG = 300_000  # messages in flight per set: many seconds of draining


def test_the_unit_and_labd_share_one_stop_timeout() -> None:
    for user in (False, True):
        assert f"\nTimeoutStopSec={TIMEOUT_STOP_S}\n" in render("/usr/bin/labd", user=user)
    assert 0 < SHUTDOWN_MARGIN_S < TIMEOUT_STOP_S


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_sigterm_with_flooded_queues_exits_within_the_stop_timeout(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(("--stop-timeout", f"{STOP_TIMEOUT:g}"))
    conn = d.connect()
    ids = [json.loads(conn.root.spawn("queue", 2, FLOOD))["id"] for _ in range(2)]

    def backlog() -> bool:
        sets = json.loads(conn.root.status(tuple(ids)))
        return all(s["in_flight"] > BACKLOG for s in sets)

    wait_for(backlog, 60, "a backlog in both queues", every=0.2)
    conn.close()
    d.send(signal.SIGTERM)
    start = time.monotonic()
    assert d.wait(timeout=STOP_TIMEOUT + 20) == 0
    took = time.monotonic() - start
    assert took <= STOP_TIMEOUT, f"labd took {took:.1f} s to stop, its budget is {STOP_TIMEOUT} s"
    again = labd_factory(state_dir=d.state_dir)
    conn = again.connect()
    try:
        for set_id in ids:
            found = json.loads(conn.root.inspect(set_id))
            assert found["state"] == "stopped"
            assert found["attempted"] > BACKLOG and found["value"] > 0
            assert found["in_flight"] == 0
            assert found["attempted"] == found["value"] + found["lost"]
            last = found["events"][-1]
            assert "stop cut short" in json.dumps(last), found["events"]
    finally:
        conn.close()
    assert "stop cut short" in d.log_text()


@pytest.mark.daemon
@pytest.mark.timeout(120)
def test_sigterm_during_a_client_stop_exits_within_the_stop_timeout(
    labd_factory: DaemonFactory,
) -> None:
    """A client's stop of a flooded queue (its own bounds: up to a minute of draining)
    is under way when SIGTERM comes: shutdown bounds it too, and records its figures."""
    d = labd_factory(("--stop-timeout", f"{STOP_TIMEOUT:g}"))
    conn = d.connect()
    set_id = json.loads(conn.root.spawn("queue", 2, FLOOD))["id"]

    def backlog() -> bool:
        return json.loads(conn.root.status((set_id,)))[0]["in_flight"] > BACKLOG

    wait_for(backlog, 60, "a backlog in the queue", every=0.2)
    stopper = d.connect()
    stopper._config["sync_request_timeout"] = None
    outcome: list[object] = []

    def client_stop() -> None:
        try:
            outcome.append(stopper.root.stop((set_id,)))
        except EOFError as exc:  # labd went away before it answered: also fine here
            outcome.append(exc)

    thread = threading.Thread(target=client_stop, daemon=True)
    thread.start()
    state = lambda: json.loads(conn.root.status((set_id,)))[0]["state"]  # noqa: E731
    wait_for(lambda: state() == "stopping", 20, "the client's stop to begin")
    conn.close()
    d.send(signal.SIGTERM)
    start = time.monotonic()
    assert d.wait(timeout=STOP_TIMEOUT + 70) == 0
    took = time.monotonic() - start
    thread.join(10)
    stopper.close()
    print(f"labd stopped {took:.1f} s after SIGTERM (budget {STOP_TIMEOUT:g} s)")
    assert took <= STOP_TIMEOUT, f"labd took {took:.1f} s to stop, its budget is {STOP_TIMEOUT} s"
    again = labd_factory(state_dir=d.state_dir)
    conn = again.connect()
    try:
        found = json.loads(conn.root.inspect(set_id))
        assert found["state"] == "stopped", found["events"]
        assert found["attempted"] > BACKLOG and found["value"] > 0
        assert found["attempted"] == found["value"] + found["lost"]
    finally:
        conn.close()
