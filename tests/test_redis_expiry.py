"""Nothing stays in Redis when a labd dies mid-run: every key a set writes carries an
expiry (``key_ttl=``) that the live set keeps renewing.

A labd killed with SIGKILL (its workers end with it) leaves its sets' keys, each with an
expiry, and Redis removes them once it passes; a live set's keys outlast several
expiries, and its counter never restarts (an expired key would: ``lost`` would show it).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import rpyc
from helpers import wait_for
from redis_server import RedisServer

pytestmark = pytest.mark.daemon

TTL_S = 2.0  # short, for the test: renewed every 0.67 s


def spawn(rpc: rpyc.Connection, mechanism: str, counters: int, params: dict[str, Any]) -> int:
    return int(json.loads(rpc.root.spawn(mechanism, counters, json.dumps(params)))["id"])


def attempted(rpc: rpyc.Connection, sid: int) -> int:
    (s,) = json.loads(rpc.root.status((sid,)))
    return int(s["attempted"])


def expiries(server: RedisServer, prefix: str) -> dict[bytes, int]:
    """Each key under ``prefix`` with its PTTL (-1: no expiry; -2: gone meanwhile)."""
    with server.client() as r:
        return {k: int(r.pttl(k)) for k in r.scan_iter(match=f"{prefix}:*")}


def expired_keys(server: RedisServer) -> int:
    """How many keys the server has removed because their expiry passed, so far."""
    with server.client() as r:
        return int(r.info("stats")["expired_keys"])


@pytest.fixture
def nothing_of_ours(redis_server: RedisServer) -> Iterator[None]:
    assert not redis_server.keys()
    yield
    with redis_server.client() as r:
        left = list(r.scan_iter(match="lab:expiry:*"))
        if left:
            r.delete(*left)
    assert not left, f"keys left in Redis: {left}"


@pytest.mark.usefixtures("nothing_of_ours")
def test_a_killed_labds_keys_expire_on_their_own(
    labd_factory: Any, redis_server: RedisServer
) -> None:
    d = labd_factory()
    expired_before = expired_keys(redis_server)
    rpc = d.connect()
    base = {"url": redis_server.url, "key_ttl": TTL_S, "interval": 0.001}
    try:
        counter = spawn(rpc, "redis", 2, {**base, "op": "watch", "namespace": "lab:expiry:c"})
        queue = spawn(rpc, "redis-queue", 2, {**base, "namespace": "lab:expiry:q"})
        wait_for(lambda: min(attempted(rpc, s) for s in (counter, queue)) > 50, 30, "increments")
    finally:
        rpc.close()
    seen = {**expiries(redis_server, "lab:expiry:c"), **expiries(redis_server, "lab:expiry:q")}
    assert {b"lab:expiry:c:owner", b"lab:expiry:c:value", b"lab:expiry:c:retries"} <= set(seen)
    assert all(0 < ms <= TTL_S * 1000 for ms in seen.values() if ms != -2), seen
    workers = d.descendants()
    d.allow_tracebacks = True  # a killed labd's workers may say they lost it
    os.kill(d.pid, signal.SIGKILL)
    d.wait()
    wait_for(lambda: not any(p.is_running() for p in workers), 15, "the workers to end with labd")
    after = {**expiries(redis_server, "lab:expiry:c"), **expiries(redis_server, "lab:expiry:q")}
    assert -1 not in after.values(), f"a key without an expiry would stay for good: {after}"
    wait_for(lambda: not redis_server.keys(), TTL_S + 15, "the dead set's keys to expire")
    # gone by expiry, not removed by anyone (KEYS hides an expired key at once; the
    # server counts it once it deleted it, lazily or in its expiry cycle)
    wait_for(
        lambda: expired_keys(redis_server) - expired_before >= len(after),
        15,
        f"the server to count {len(after)} expired keys",
    )


@pytest.mark.usefixtures("nothing_of_ours")
def test_a_live_sets_keys_outlast_their_expiry_and_go_at_its_end(
    module_rpc: rpyc.Connection, redis_server: RedisServer
) -> None:
    params = {"url": redis_server.url, "key_ttl": 2.0, "op": "incr", "interval": 0.002}
    sid = spawn(module_rpc, "redis", 2, {**params, "namespace": "lab:expiry:live"})
    want = {b"lab:expiry:live:owner", b"lab:expiry:live:parts", b"lab:expiry:live:value"}
    checks = 0

    def all_there_through_three_expiries() -> bool:
        nonlocal checks
        keys = expiries(redis_server, "lab:expiry:live")
        assert want <= set(keys), f"a live set's key expired: {keys}"
        assert all(0 < ms <= 2000 for ms in keys.values()), keys
        checks += 1
        return checks >= 60 and attempted(module_rpc, sid) > 0

    try:
        wait_for(all_there_through_three_expiries, 30, "three expiries (6 s)", every=0.1)
    finally:
        (final,) = json.loads(module_rpc.root.stop((sid,)))
    # the value key never expired: INCR would have started over from 1, and lost shown it
    assert final["state"] == "stopped", final
    assert final["lost"] == 0 and final["value"] == final["attempted"] > 0, final
    assert expiries(redis_server, "lab:expiry:live") == {}, "an orderly end removes them at once"
