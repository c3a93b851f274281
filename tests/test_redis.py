"""The Redis mechanisms against private redis-server processes and a real labd.

The lesson on a real engine: GET-then-SET loses updates flat out, INCR and WATCH/MULTI
lose none (WATCH counts its retries), the list queue loses none, Pub/Sub with a stalled
subscriber loses; every set removes its keys; bad addresses and logins are refused at
spawn in one line; secrets never show.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rpyc
from helpers import Daemon, one_line, wait_for
from redis_server import RedisServer

pytestmark = pytest.mark.daemon

SECRET = "s3cret-Horse-Battery"


@pytest.fixture(autouse=True)
def no_keys_left(redis_server: RedisServer) -> Iterator[None]:
    assert redis_server.keys() == []
    yield
    assert redis_server.keys() == [], "a set left keys in Redis"


def status(rpc: rpyc.Connection, sid: int) -> dict[str, Any]:
    (s,) = json.loads(rpc.root.status((sid,)))
    return s  # type: ignore[no-any-return]


def run(
    rpc: rpyc.Connection, mechanism: str, counters: int, params: dict[str, Any], enough: int
) -> dict[str, Any]:
    sid = json.loads(rpc.root.spawn(mechanism, counters, json.dumps(params)))["id"]
    try:
        wait_for(lambda: status(rpc, sid)["attempted"] >= enough, 30, f"{enough} increments")
    finally:
        (final,) = json.loads(rpc.root.stop((sid,)))
    assert final["state"] == "stopped", final
    assert final["lost"] == final["attempted"] - final["value"], final
    return final  # type: ignore[no-any-return]


def test_getset_loses_updates_flat_out(
    module_rpc: rpyc.Connection, redis_server: RedisServer
) -> None:
    params = {"url": redis_server.url, "interval": 0, "op": "getset"}
    final = run(module_rpc, "redis", 4, params, 2000)
    if final["lost"] == 0:  # an unlucky short run (a loaded host): once more, longer
        final = run(module_rpc, "redis", 4, params, 20000)
    assert final["lost"] > 0, final
    assert final["value"] < final["attempted"]


@pytest.mark.parametrize("op", ["incr", "watch"])
def test_incr_and_watch_lose_nothing(
    module_rpc: rpyc.Connection, redis_server: RedisServer, op: str
) -> None:
    with redis_server.client() as client:
        client.config_resetstat()
        params = {"url": redis_server.url, "interval": 0, "op": op}
        final = run(module_rpc, "redis", 4, params, 2000)
        execs = int(client.info("commandstats").get("cmdstat_exec", {}).get("calls", 0))
    assert final["lost"] == 0 and final["value"] == final["attempted"] > 0, final
    if op == "watch":  # four counters on one key flat out: WATCH sees the others' writes
        assert final["extra"]["retries"] > 0, final
        # exact: every EXEC the server aborted (no other client runs one here) is a retry
        assert final["extra"]["retries"] == execs - final["value"], (execs, final)
    else:
        assert "retries" not in final["extra"]
    assert final["extra"]["namespace"].startswith("ipclab:")


def test_the_queue_loses_nothing_and_times_its_messages(
    module_rpc: rpyc.Connection, redis_server: RedisServer
) -> None:
    params = {"url": redis_server.url, "interval": 0, "printers": 2, "maxsize": 200}
    final = run(module_rpc, "redis-queue", 3, params, 3000)
    assert (final["lost"], final["value"]) == (0, final["attempted"]), final
    assert 0 < final["latency_p50_us"] <= final["latency_p99_us"], final
    procs = json.loads(module_rpc.root.inspect(final["id"]))["processes"]
    assert all(p["exitcode"] == 0 for p in procs), procs


def test_pubsub_loses_what_a_stalled_subscriber_misses(
    module_rpc: rpyc.Connection, redis_server: RedisServer
) -> None:
    params = {"url": redis_server.url, "interval": 0, "payload": 256}
    sid = json.loads(module_rpc.root.spawn("redis-pubsub", 2, json.dumps(params)))["id"]
    procs = json.loads(module_rpc.root.inspect(sid))["processes"]
    printer = next(p["pid"] for p in procs if p["role"] == "printer")
    try:
        wait_for(lambda: status(module_rpc, sid)["value"] > 100, 20, "messages to arrive")
        os.kill(printer, signal.SIGSTOP)  # the server drops it past 256 KiB of backlog
        stalled_at = status(module_rpc, sid)["attempted"]
        wait_for(
            lambda: status(module_rpc, sid)["attempted"] > stalled_at + 20000,
            30,
            "publishing to go on while the subscriber is stalled",
        )
    finally:
        os.kill(printer, signal.SIGCONT)
        (final,) = json.loads(module_rpc.root.stop((sid,)))
    assert final["state"] == "stopped", final
    assert final["lost"] == final["attempted"] - final["value"] > 0, final


def test_an_unreachable_server_is_refused_at_spawn_in_one_line(
    module_rpc: rpyc.Connection,
) -> None:
    before = json.loads(module_rpc.root.status(()))
    with pytest.raises(Exception) as caught:
        module_rpc.root.spawn("redis", 2, json.dumps({"url": "unix:///nonexistent/redis.sock"}))
    assert one_line(caught.value).startswith("cannot reach Redis at unix:///nonexistent/redis.sock")
    assert json.loads(module_rpc.root.status(())) == before  # nothing half-started


def test_a_namespace_in_use_is_refused(
    module_rpc: rpyc.Connection, redis_server: RedisServer
) -> None:
    params = {"url": redis_server.url, "namespace": "lab:taken"}
    first = json.loads(module_rpc.root.spawn("redis", 1, json.dumps(params)))["id"]
    try:
        with pytest.raises(Exception) as caught:
            module_rpc.root.spawn("redis", 1, json.dumps(params))
        assert "namespace lab:taken is already in use" in one_line(caught.value)
    finally:
        module_rpc.root.stop((first,))


def test_a_password_in_the_url_is_refused(module_rpc: rpyc.Connection) -> None:
    with pytest.raises(Exception) as caught:
        module_rpc.root.spawn("redis", 1, json.dumps({"url": f"redis://:{SECRET}@127.0.0.1:1/0"}))
    assert "password_file=" in one_line(caught.value)
    assert SECRET not in one_line(caught.value)


@pytest.fixture
def locked_server() -> Iterator[RedisServer]:
    server = RedisServer(["--requirepass", SECRET])
    try:
        yield server
    finally:
        server.stop()


def test_a_password_file_logs_in_and_the_secret_never_shows(
    labd_daemon: Daemon, locked_server: RedisServer, tmp_path: Path
) -> None:
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text(SECRET + "\n")
    wrong.write_text("not-it\n")
    rpc = labd_daemon.connect()
    try:
        base = {"url": locked_server.url, "interval": 0, "op": "incr"}
        for given, expect in (({}, "needs a password"), ({"password_file": str(wrong)}, "wrong")):
            with pytest.raises(Exception) as caught:
                rpc.root.spawn("redis", 1, json.dumps({**base, **given}))
            assert expect in one_line(caught.value), one_line(caught.value)
        final = run(rpc, "redis", 2, {**base, "password_file": str(right)}, 200)
        assert final["lost"] == 0, final
        seen = [rpc.root.status(()), rpc.root.inspect(final["id"]), rpc.root.tail(final["id"])]
    finally:
        rpc.close()
    with locked_server.client(SECRET) as r:
        assert r.keys("*") == []
    labd_daemon.stop()
    seen.append(labd_daemon.log_text())
    seen += [
        p.read_bytes().decode("latin-1") for p in labd_daemon.state_dir.rglob("*") if p.is_file()
    ]
    assert not [text for text in seen if SECRET in text]


def test_without_the_extra_the_mechanisms_are_listed_and_refused_in_one_line(
    labd_factory: Any, tmp_path: Path
) -> None:
    hidden = tmp_path / "hide" / "redis"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('the redis package is hidden here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "hide"))
    d = labd_factory(env=env)
    rpc = d.connect()
    try:
        listed = {m["name"]: m for m in json.loads(rpc.root.mechanisms())}
        assert {"redis", "redis-queue", "redis-pubsub"} <= set(listed)
        assert "error" not in listed["redis"]
        with pytest.raises(Exception) as caught:
            rpc.root.spawn("redis", 1, json.dumps({"url": "unix:///nonexistent.sock"}))
        assert one_line(caught.value) == (
            "the Redis mechanisms need the redis package: install the extra: "
            "pip install 'ipclab[redis]'"
        )
        assert json.loads(rpc.root.status(())) == []
    finally:
        rpc.close()
