"""Several labds from one labctl: named contexts, and one set spread over hosts (a group).

labctl runs as a user runs it (a subprocess, its own config and state dirs); the labds
are real, on unix sockets here, and on two network "hosts" (this namespace and one of
our own joined by a veth pair, as in test_tls.py) for the cross-host test, with one
private Redis server both reach.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemonkit import DaemonFactory
from helpers import Daemon, free_port, labctl_command, short_dir, wait_for
from redis_server import RedisServer
from test_tls import Netns, Pki, tls_init
from test_tls import netns as netns

pytestmark = pytest.mark.daemon
CMD_TIMEOUT = 60


@dataclass
class User:
    """A labctl user: private config and state dirs."""

    home: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
        env["XDG_CONFIG_HOME"] = str(self.home / "config")
        env["XDG_STATE_HOME"] = str(self.home / "state")
        env["XDG_RUNTIME_DIR"] = str(self.home / "run")  # no local labd: none is started
        return env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*labctl_command(), *args],
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT,
            env=self.env(),
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def fails(self, code: int, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("labctl: "), done.stderr
        return lines[0]

    @property
    def contexts_file(self) -> Path:
        return self.home / "config" / "ipclab" / "contexts.json"


@pytest.fixture
def user() -> User:
    return User(short_dir())


@pytest.fixture(scope="module")
def labds() -> Iterator[tuple[Daemon, Daemon]]:
    """Two labds for the module's tests that leave both running."""
    factory = DaemonFactory()
    try:
        yield factory(), factory()
    finally:
        factory.finish()


@pytest.fixture
def two(labds: tuple[Daemon, Daemon], user: User) -> tuple[Daemon, Daemon]:
    a, b = labds
    user.ok("context", "add", "lab1", "--connect", a.socket)
    user.ok("context", "add", "lab2", "--connect", f"unix:{b.socket}")
    return a, b


def live_sets(d: Daemon) -> list[dict[str, Any]]:
    conn = d.connect()
    try:
        return [s for s in json.loads(conn.root.status(())) if s["state"] != "stopped"]
    finally:
        conn.close()


# --- contexts ----------------------------------------------------------------------------
def test_contexts_are_private_named_and_chosen(two: tuple[Daemon, Daemon], user: User) -> None:
    a, b = two
    st = user.contexts_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(user.contexts_file.parent.stat().st_mode) == 0o700
    listed = {c["name"]: c for c in user.json("context", "list")}
    assert listed["lab1"]["connect"] == f"unix:{a.socket}" and not listed["lab1"]["current"]
    sid = str(user.json("--context", "lab2", "spawn", "queue", "1")["id"])
    assert [s["id"] for s in live_sets(b)] == [int(sid)] and live_sets(a) == []
    user.ok("context", "use", "lab2")  # now the default for commands without --connect
    assert [s["id"] for s in user.json("status")] == [int(sid)]
    rows = user.json("status", "--all-contexts")
    assert [(r["context"], r["id"]) for r in rows] == [("lab2", int(sid))]
    assert "CONTEXT" in user.ok("status", "--all-contexts").splitlines()[0]
    user.ok("stop", sid)
    user.ok("context", "rm", "lab2")  # the one in use: back to the local socket
    assert "lab2" not in {c["name"] for c in user.json("context", "list")}


def test_bad_contexts_are_refused_in_one_line(two: tuple[Daemon, Daemon], user: User) -> None:
    assert "no context 'nope'" in user.fails(2, "--context", "nope", "status")
    assert "exists" in user.fails(2, "context", "add", "lab1", "--connect", "/x.sock")
    assert "reserved" in user.fails(2, "context", "add", "local", "--connect", "/x.sock")
    assert "loopback" in user.fails(2, "context", "add", "far", "--connect", "far.invalid:18861")
    assert "exclude" in user.fails(2, "--context", "lab1", "--connect", "/x.sock", "status")
    user.contexts_file.chmod(0o644)
    line = user.fails(2, "--context", "lab1", "status")
    assert "open to others (mode 644)" in line and "chmod 600" in line
    user.contexts_file.chmod(0o600)
    assert "not a context" not in user.ok("--context", "lab1", "status")


# --- groups ------------------------------------------------------------------------------
def group_run(user: User, op: str, url: str, enough: int = 1000) -> dict[str, Any]:
    params = (f"op={op}", "interval=0", f"url={url}")
    g = user.json("spawn", "redis", "8", *params, "--on", "lab1,lab2")
    assert set(g) >= {"group", "parts", "state", "attempted", "value", "lost"}, g
    assert [p["counters"] for p in g["parts"]] == [4, 4]
    gid = g["group"]
    wait_for(lambda: user.json("status", gid)[0]["attempted"] > enough, 30, "the group to count")
    (final,) = user.json("stop", gid)
    assert final["state"] == "stopped", final
    assert final["attempted"] == sum(p["attempted"] for p in final["parts"])
    assert final["lost"] == final["attempted"] - final["value"]
    return final  # type: ignore[no-any-return]


def test_a_group_over_two_labds_counts_exactly(
    two: tuple[Daemon, Daemon], user: User, redis_server: RedisServer
) -> None:
    racy = group_run(user, "getset", redis_server.url)
    assert racy["lost"] > 0, racy
    gid = racy["group"]
    shown = user.json("inspect", gid)  # inspect and watch take the group id too
    assert (shown["group"], shown["value"], shown["lost"]) == (gid, racy["value"], racy["lost"])
    watched = user.ok("watch", gid)  # not a terminal: one table, and it has ended
    assert f"group {gid}" in watched and "stopped: value" in watched
    assert "lab1" in user.ok("status", gid) and "lab2" in user.ok("status", gid)
    exact = group_run(user, "incr", redis_server.url)
    assert exact["lost"] == 0 and exact["value"] == exact["attempted"], exact
    assert redis_server.keys() == []
    for d in two:  # each labd recorded its part, with the group in its parameters
        conn = d.connect()
        try:
            sets = json.loads(conn.root.status(()))
        finally:
            conn.close()
        groups = [s["params"].get("group") for s in sets]
        assert f"{racy['group']}:{1 + two.index(d)}/2" in groups
        assert f"{exact['group']}:{1 + two.index(d)}/2" in groups


def test_an_unreachable_host_fails_the_group_cleanly(
    two: tuple[Daemon, Daemon], user: User, redis_server: RedisServer
) -> None:
    user.ok("context", "add", "gone", "--connect", str(short_dir() / "none.sock"))
    url = f"url={redis_server.url}"
    line = user.fails(3, "spawn", "redis", "4", url, "--on", "lab1,gone")
    assert "group not started: context gone: cannot reach labd" in line
    assert "no context 'nope'" in user.fails(2, "spawn", "redis", "4", url, "--on", "lab1,nope")
    assert live_sets(two[0]) == []


def test_a_part_refused_stops_the_parts_started(
    labd_factory: DaemonFactory, user: User, redis_server: RedisServer
) -> None:
    a, b = labd_factory(), labd_factory(("--max-per-set", "2"))
    user.ok("context", "add", "lab1", "--connect", a.socket)
    user.ok("context", "add", "small", "--connect", b.socket)
    line = user.fails(1, "spawn", "redis", "8", f"url={redis_server.url}", "--on", "lab1,small")
    assert "group not started: context small:" in line and "stopped what had started" in line
    assert live_sets(a) == [] and live_sets(b) == []
    assert redis_server.keys() == []


def test_a_host_dying_mid_run_degrades_the_group(
    labd_factory: DaemonFactory, user: User, redis_server: RedisServer
) -> None:
    a, b = labd_factory(), labd_factory()
    user.ok("context", "add", "lab1", "--connect", a.socket)
    user.ok("context", "add", "lab2", "--connect", b.socket)
    g = user.json(
        "spawn",
        "redis",
        "4",
        "op=incr",
        "interval=0.01",
        f"url={redis_server.url}",
        "--on",
        "lab1,lab2",
    )
    gid = g["group"]
    wait_for(lambda: user.json("status", gid)[0]["attempted"] > 50, 30, "the group to count")
    b.send(signal.SIGKILL)
    b.wait()
    (now,) = user.json("status", gid)
    assert now["state"] == "degraded", now
    alive = [p for p in now["parts"] if "unreachable" not in p]
    assert [p["context"] for p in alive] == ["lab1"] and alive[0]["attempted"] > 0
    assert now["attempted"] == alive[0]["attempted"]
    (final,) = user.json("stop", gid)
    assert final["state"] == "degraded" and live_sets(a) == []
    with redis_server.client() as r:  # the dead part could not leave: its keys stay
        r.flushall()


# --- across hosts: two network namespaces on a veth pair -------------------------------
@pytest.mark.timeout(180)
def test_a_group_across_two_hosts(
    netns: Netns,
    labd_factory: DaemonFactory,
    user: User,
) -> None:
    root = short_dir()
    tls_init(root / "pki", netns.host_addr, netns.peer_addr)
    pki = Pki(root / "pki")
    port = free_port()
    a = labd_factory(("--listen", f"{netns.host_addr}:{port}", *pki.labd_args()))
    b = labd_factory(
        ("--listen", f"{netns.peer_addr}:{port}", *pki.labd_args()), wrapper=netns.exec_prefix()
    )
    redis_port = free_port()
    server = RedisServer(["--protected-mode", "no"], bind=netns.host_addr, port=redis_port)
    try:
        tls = ("--tls-cert", pki.client_crt, "--tls-key", pki.client_key, "--tls-ca", pki.ca_crt)
        user.ok("context", "add", "lab1", "--connect", f"{netns.host_addr}:{port}", *tls)
        user.ok("context", "add", "lab2", "--connect", f"{netns.peer_addr}:{port}", *tls)
        for name in ("lab1", "lab2"):
            wait_for(lambda n=name: user.run("--context", n, "status").returncode == 0, 20, name)
        url = f"redis://{netns.host_addr}:{redis_port}/0"
        racy = group_run(user, "getset", url)
        assert racy["lost"] > 0, racy
        exact = group_run(user, "watch", url, enough=200)
        assert exact["lost"] == 0 and exact["retries"] > 0, exact
        hosts = {r["context"] for r in user.json("status", "--all-contexts")}
        assert hosts == {"lab1", "lab2"}
        assert server.keys() == []
        assert live_sets(a) == [] and live_sets(b) == []
    finally:
        server.stop()
