"""The contract suite: every installed mechanism, against a real labd over rpyc.

Mechanisms are read from the ``labd.mechanisms`` entry points, so a third-party plugin
(e.g. ``examples/ipclab-shm``, once installed) is tested the same way as the built-ins.
Each runs paced and flat out; the accounting invariant after a stop must hold exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import rpyc
from daemonkit import one_daemon
from helpers import Daemon, wait_for

from labd.testing import check_accounting

pytestmark = pytest.mark.daemon

ENTRY_POINTS = {ep.name: ep for ep in entry_points(group="labd.mechanisms")}
MESSAGE_SAFE = ("queue", "pipe")  # by design nothing is lost with their defaults
PACES = {"paced": 0.05, "flat": 0.0}
ENOUGH = {"paced": 30, "flat": 3000}  # increments to wait for before the stop
LINE = re.compile(r"Time: \d+")


def _has_param(name: str, param: str) -> bool:
    try:
        cls = ENTRY_POINTS[name].load()
    except Exception:  # a broken plugin: its own test reports it
        return False
    return any(p.name == param for p in getattr(cls, "params", ()))


def _has_lock(name: str) -> bool:
    return _has_param(name, "lock")


def _cases() -> Iterator[Any]:
    for name in sorted(ENTRY_POINTS):
        variants = [{}] + ([{"lock": True}] if _has_lock(name) else [])
        for pace in PACES:
            for extra in variants:
                label = "-".join([name, pace, *(f"{k}={v}" for k, v in extra.items())])
                yield pytest.param(name, pace, extra, id=label)


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    """One labd for the module, with only the installed mechanisms."""
    yield from one_daemon()


@pytest.fixture
def rpc(daemon: Daemon) -> Iterator[rpyc.Connection]:
    conn = daemon.connect()
    yield conn
    conn.close()


@pytest.fixture
def server(request: pytest.FixtureRequest, mechanism: str) -> Iterator[dict[str, Any]]:
    """Parameters that give a mechanism taking a server address (``url=``, the Redis
    ones) a private server; it must leave no key there."""
    if mechanism not in ENTRY_POINTS or not _has_param(mechanism, "url"):
        yield {}
        return
    found = request.getfixturevalue("redis_server")
    yield {"url": found.url}
    assert found.keys() == [], f"{mechanism} left keys in Redis: {found.keys()}"


def status(rpc: rpyc.Connection, sid: int) -> dict[str, Any]:
    (s,) = json.loads(rpc.root.status((sid,)))
    return s  # type: ignore[no-any-return]


def has_line(rpc: rpyc.Connection, sid: int) -> bool:
    lines = json.loads(rpc.root.tail(sid, 0, 5))["lines"]
    return any(LINE.fullmatch(text) for _, text in lines)


def run(
    rpc: rpyc.Connection,
    mechanism: str,
    counters: int,
    params: dict[str, Any],
    enough: int,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Spawn, wait for ``enough`` increments and a printer line, stop; the final status."""
    started = json.loads(rpc.root.spawn(mechanism, counters, json.dumps(params)))
    sid = started["id"]
    try:
        assert started["state"] == "running", started
        wait_for(
            lambda: status(rpc, sid)["attempted"] >= enough,
            timeout,
            f"{mechanism} {params} to reach {enough} increments",
        )
        wait_for(lambda: has_line(rpc, sid), 5, f"a 'Time: N' line from {mechanism}")
    finally:
        (final,) = json.loads(rpc.root.stop((sid,)))
        final["processes"] = json.loads(rpc.root.inspect(sid))["processes"]
    return final  # type: ignore[no-any-return]


def check_invariant(final: dict[str, Any]) -> None:
    """What every correct mechanism shows once stopped (labd.metrics)."""
    where = f"{final['mechanism']} {final['params']}: {final}"
    assert final["state"] == "stopped", where
    assert final["attempted"] > 0, where
    check_accounting(final)
    assert final["lost"] <= final["attempted"], where
    procs = final["processes"]
    assert len(procs) == final["counters"] + final["printers"], where
    assert all(not p["alive"] for p in procs), where
    bad = [p for p in procs if p["exitcode"] != 0]
    assert not bad, f"processes did not end cleanly on an orderly stop: {bad} ({where})"


@pytest.mark.parametrize(("mechanism", "pace", "extra"), list(_cases()))
def test_accounting_invariant(
    rpc: rpyc.Connection, mechanism: str, pace: str, extra: dict[str, Any], server: dict[str, Any]
) -> None:
    # a server (Redis) costs a round trip per increment: a tenth as many will do
    enough = ENOUGH[pace] // 10 if server else ENOUGH[pace]
    final = run(rpc, mechanism, 3, {"interval": PACES[pace], **extra, **server}, enough)
    check_invariant(final)
    described = {m["name"]: m for m in json.loads(rpc.root.mechanisms())}[mechanism]
    if described["messages"] and final["value"] > 0:
        assert final["latency_p50_us"] is not None
        assert 0 < final["latency_p50_us"] <= final["latency_p99_us"]
    if extra.get("lock") or (mechanism in MESSAGE_SAFE and not extra):
        assert (final["lost"], final["corrupt"]) == (0, 0), final
        assert final["value"] == final["attempted"]


@pytest.mark.parametrize("mechanism", sorted(ENTRY_POINTS))
def test_runs_under_spawn(rpc: rpyc.Connection, mechanism: str, server: dict[str, Any]) -> None:
    final = run(rpc, mechanism, 2, {"interval": 0, "start_method": "spawn", **server}, 500)
    check_invariant(final)


def lost_or_retry(
    rpc: rpyc.Connection, mechanism: str, params: dict[str, Any], key: str, enough: int
) -> dict[str, Any]:
    """Flat-out races lose updates reliably (measured: every one of dozens of runs);
    an unlucky short run is retried once, longer."""
    final = run(rpc, mechanism, 4, params, enough)
    check_invariant(final)
    if final[key] == 0:
        final = run(rpc, mechanism, 4, params, enough * 10)
        check_invariant(final)
    return final


@pytest.mark.parametrize(("mechanism", "enough"), [("shared", 20_000), ("manager", 1000)])
def test_flat_out_racy_counters_lose_updates(
    rpc: rpyc.Connection, mechanism: str, enough: int
) -> None:
    if mechanism not in ENTRY_POINTS:
        pytest.fail(f"built-in mechanism {mechanism!r} is not installed")
    final = lost_or_retry(rpc, mechanism, {"interval": 0}, "lost", enough)
    assert final["lost"] > 0, final
    assert final["corrupt"] == 0
    assert final["value"] < final["attempted"]


def test_a_shared_pipe_end_garbles_large_messages(rpc: rpyc.Connection) -> None:
    params = {"interval": 0, "shared_end": True, "payload": 65536}
    final = lost_or_retry(rpc, "pipe", params, "corrupt", 200)
    assert final["corrupt"] > 0, final
    # every message that did not arrive intact arrived garbled: corrupt, none lost
    assert final["lost"] == 0, final


@pytest.mark.parametrize("payload", [16, 8192])
def test_one_writer_pipes_time_a_sample_of_their_messages(
    rpc: rpyc.Connection, payload: int
) -> None:
    # flat out, a counter stamps one message in 16 of its pipe and the printer times
    # exactly those: small messages are checked in bulk, large ones (8 KiB) one by one
    final = run(rpc, "pipe", 2, {"interval": 0, "payload": payload}, 2000)
    check_invariant(final)
    assert (final["lost"], final["corrupt"]) == (0, 0), final
    assert final["latency_p50_us"] is not None, final
    assert 0 < final["latency_p50_us"] <= final["latency_p99_us"] < 10_000_000, final


COMMON = {"interval", "printers", "duration", "start_method", "name"}


def test_mechanisms_lists_every_entry_point_with_its_parameters(rpc: rpyc.Connection) -> None:
    listed = {m["name"]: m for m in json.loads(rpc.root.mechanisms())}
    assert set(ENTRY_POINTS) <= set(listed)
    for name, ep in ENTRY_POINTS.items():
        m = listed[name]
        assert "error" not in m, m
        if ep.dist is not None:
            assert m["source"] == ep.dist.metadata["Name"]
        assert isinstance(m["summary"], str) and m["summary"].strip()
        assert "\n" not in m["summary"]
        assert isinstance(m["messages"], bool)
        names = [p["name"] for p in m["params"]]
        assert len(names) == len(set(names)), f"{name}: a parameter is listed twice"
        assert set(names) >= COMMON
        for p in m["params"]:
            assert {"name", "type", "default", "help"} <= set(p), p
            assert p["type"] in ("int", "float", "bool", "str"), p
            assert isinstance(p["help"], str) and p["help"].strip(), p
            if "choices" in p:
                assert p["default"] in p["choices"], p
            if "min" in p and p["default"] is not None:
                assert p["default"] >= p["min"], p
            if "max" in p and p["default"] is not None:
                assert p["default"] <= p["max"], p
    builtin = {"shared", "manager", "queue", "pipe"}
    assert builtin <= set(ENTRY_POINTS), "the built-ins are entry points like any plugin"
    for name in builtin:
        assert listed[name]["source"] == "ipclab"
