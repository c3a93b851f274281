"""A stop fits the budget systemd gives labd (TimeoutStopSec): sets drain what they can,
are ended at the deadline, and their final figures are recorded either way."""

from __future__ import annotations

import json
import signal
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
