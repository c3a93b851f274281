"""labctl explain and the racy mechanisms' teaching parameters, against a real labd:
window= makes the race show at a slow tick, trace= lets labd reconstruct each lost
update, printer=busy burns a core where the blocking printer sleeps."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import rpyc
from helpers import wait_for

from labctl import explain as text

pytestmark = pytest.mark.daemon


@pytest.fixture
def rpc(module_rpc: rpyc.Connection) -> Iterator[rpyc.Connection]:
    """One labd for the module (conftest's module_labd)."""
    yield module_rpc


def spawn(rpc: rpyc.Connection, mech: str, n: int, **params: Any) -> int:
    return int(json.loads(rpc.root.spawn(mech, n, json.dumps(params)))["id"])


def status(rpc: rpyc.Connection, sid: int) -> dict[str, Any]:
    (s,) = json.loads(rpc.root.status((sid,)))
    return s  # type: ignore[no-any-return]


def stop(rpc: rpyc.Connection, sid: int) -> dict[str, Any]:
    (s,) = json.loads(rpc.root.stop((sid,)))
    return s  # type: ignore[no-any-return]


def explain(rpc: rpyc.Connection, sid: int) -> dict[str, Any]:
    return json.loads(rpc.root.explain(sid))  # type: ignore[no-any-return]


def run_until(rpc: rpyc.Connection, sid: int, attempted: int, timeout: float = 20) -> None:
    wait_for(lambda: status(rpc, sid)["attempted"] >= attempted, timeout, f"{attempted} tries")


@pytest.mark.parametrize("mechanism", ["shared", "manager"])
def test_a_window_loses_updates_at_a_slow_tick_and_the_trace_finds_every_one(
    rpc: rpyc.Connection, mechanism: str
) -> None:
    """The lesson's 10 counters at a slow tick lost 0 of 140 on a loaded host; with a
    window each tick loses, and the trace of the whole run accounts for each loss."""
    sid = spawn(rpc, mechanism, 10, interval=0.2, window=0.05, trace=True)
    try:
        run_until(rpc, sid, 30)
    finally:
        final = stop(rpc, sid)
    assert final["variant"].startswith(f"{mechanism} 10 trace=yes window=0.05")
    assert final["lost"] > 0, final
    story = explain(rpc, sid)
    trace = story["trace"]
    assert trace["whole_run"] and trace["increments"] == final["attempted"]
    assert trace["lost"] == trace["collisions_lost"] == final["lost"], trace
    first = story["trace"]["collisions"][0]
    assert len(first["counters"]) >= 2 and first["wrote"] == first["value_read"] + 1
    shown = text.render(story)
    assert "window=0.05" in shown and "R===" in shown and "lost" in shown
    assert all(len(line) <= 80 for line in shown.splitlines()), shown


def traced_flat_out(rpc: rpyc.Connection) -> list[dict[str, Any]]:
    sid = spawn(rpc, "shared", 4, interval=0, trace=True)
    try:
        run_until(rpc, sid, 200_000)
        live = explain(rpc, sid)["trace"]
    finally:
        stop(rpc, sid)
    return [live, explain(rpc, sid)["trace"]]


@pytest.mark.timeout(180)  # up to three traced runs; each far longer under load
def test_explain_on_a_flat_out_racy_set_lists_collisions_that_match_its_lost(
    rpc: rpyc.Connection,
) -> None:
    """Flat out, updates are lost in bursts (a counter descheduled between its read and
    its write): a trace of a few ms may hold none, so an unlucky run is tried again."""
    for _ in range(3):
        traces = traced_flat_out(rpc)
        if all(t["lost"] > 0 for t in traces):
            break
    for trace in traces:
        assert trace["increments"] > 0 and trace["lost"] > 0, trace
        assert trace["collisions_lost"] == trace["lost"], trace
        assert "costs" in trace["cost"]


def test_explain_says_why_nothing_was_lost_in_the_safe_variants(rpc: rpyc.Connection) -> None:
    locked = spawn(rpc, "shared", 3, interval=0, lock=True)
    queue = spawn(rpc, "queue", 2, interval=0)
    try:
        run_until(rpc, locked, 1000)
        run_until(rpc, queue, 1000)
    finally:
        stop(rpc, locked)
        stop(rpc, queue)
    said = " ".join(explain(rpc, locked)["story"])
    assert "lock serialised" in said and " 0 lost" in said
    assert "message of its own" in " ".join(explain(rpc, queue)["story"])


def test_a_shared_pipe_end_is_explained_as_corruption(rpc: rpyc.Connection) -> None:
    sid = spawn(rpc, "pipe", 2, interval=0, shared_end=True, payload=65536)
    try:
        run_until(rpc, sid, 300)
    finally:
        final = stop(rpc, sid)
    story = explain(rpc, sid)
    assert story["kind"] == "corrupt"
    said = " ".join(story["story"])
    assert "PIPE_BUF" in said and f"{final['corrupt']:,}" in said
    # the anatomy of a corrupt message: whose bytes were cut by whose
    assert re.search(
        r"counter \d's message [\d,]+ \(65,564 bytes\) (was cut after [\d,]+ "
        r"bytes by counter \d's message|did not arrive whole)",
        said,
    ), said


def test_the_busy_printer_burns_a_core_the_blocking_one_sleeps(rpc: rpyc.Connection) -> None:
    """The lesson's section 3 printer: 'if not q.empty(): q.get()'."""
    busy = spawn(rpc, "queue", 1, interval=0.5, printer="busy")
    blocking = spawn(rpc, "queue", 1, interval=0.5)

    def printer_cpu(sid: int) -> float | None:
        procs = json.loads(rpc.root.inspect(sid))["processes"]
        return next(p["cpu_percent"] for p in procs if p["role"] == "printer")

    def spins() -> bool:
        """Busy well above blocking; on a loaded host a spinning process gets only its
        share of the 2 cores (load 30: ~7 %), while get() sleeps at ~0 %."""
        spin, sleep = printer_cpu(busy), printer_cpu(blocking)
        return spin is not None and sleep is not None and spin > 10 * (sleep + 0.5)

    try:
        wait_for(spins, 30, "the busy printer to spin while the blocking one sleeps")
    finally:
        stop(rpc, busy)
        stop(rpc, blocking)
