"""Connection floods: peers that open connections and never finish them, one user's many
idle connections, and what a client turned away is told.

Real sockets only: a flooder holding raw TCP connections that never start a TLS
handshake (from 127.0.0.2, another source address on loopback), and local users made
by forked children that drop to another uid, as tests/test_access.py does.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack

import psutil
import pytest
import rpyc
from daemonkit import DaemonFactory
from helpers import Daemon, free_port, labctl_command, wait_for
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream
from test_access import OTHER, as_user, passable
from test_tls import Pki, client_context, new_pki, tls_ready

from labctl.client import Client
from labctl.client import connect as labctl_connect
from labd.errors import EXIT_BUSY, BusyError, ConnectError, LabError
from labd.protocol import TAIL_MAX_BYTES, Address

pytestmark = pytest.mark.daemon
NOBODY = 65534
FLOOD = 300  # connections the flooder keeps open: more than labd's default budgets


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    yield from new_pki()


class Flooder(threading.Thread):
    """Keeps ``count`` TCP connections from ``source`` open to ``port``, never sending a
    byte; any that labd closes is opened again at once."""

    def __init__(self, port: int, count: int = FLOOD, source: str = "127.0.0.2") -> None:
        super().__init__(name="flooder", daemon=True)
        self.port, self.count, self.source = port, count, source
        self.socks: list[socket.socket] = []
        self.opened = 0
        self.quit = threading.Event()
        self.full = threading.Event()

    def _open(self) -> None:
        s = socket.socket()
        s.bind((self.source, 0))
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            s.close()
            return
        self.socks.append(s)
        self.opened += 1

    def run(self) -> None:
        while not self.quit.is_set():
            while len(self.socks) < self.count and not self.quit.is_set():
                self._open()
            self.full.set()
            readable, _, _ = select.select(self.socks, [], [], 0.05)
            for s in readable:  # closed by labd (or data, which never comes)
                self.socks.remove(s)
                s.close()

    def stop(self) -> None:
        self.quit.set()
        self.join(10)
        for s in self.socks:
            s.close()


def served(pki: Pki, port: int) -> bool:
    """One certified client: handshake, then version() answered."""
    ctx = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        conn = connect_stream(SocketStream(tls), config={"sync_request_timeout": 10})
        try:
            return bool(json.loads(conn.root.version())["pid"])
        finally:
            conn.close()
    except (OSError, EOFError):
        return False


def test_a_flood_of_unfinished_handshakes_keeps_no_certified_client_out(
    labd_factory: DaemonFactory, pki: Pki
) -> None:
    port = free_port()
    d = labd_factory(("--listen", f"127.0.0.1:{port}", *pki.labd_args()))
    good = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
    wait_for(lambda: tls_ready(good, port), 10, "the TLS listener")
    flooder = Flooder(port)
    flooder.start()
    try:
        assert flooder.full.wait(30), "the flooder could not open its connections"
        count = sum(served(pki, port) for _ in range(15))
    finally:
        flooder.stop()
    assert count == 15, f"{count} of 15 certified clients served during the flood"
    text = d.log_text()
    assert "127.0.0.2" in text and "handshakes" in text, text[-2000:]


# --- one local user's many idle connections ------------------------------------------------
def hog(sock: str, uid: int, most: int, ready: int, release: int) -> None:
    """In a forked child as ``uid``: open up to ``most`` connections, each answering
    version() once, and keep them; report (served, refusal) on ``ready``; wait for a
    byte on ``release``; then close them all."""
    result: dict[str, object] = {"served": 0, "refusal": None}
    clients: list[Client] = []
    try:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        for _ in range(most):
            client = labctl_connect(Address(path=sock))
            clients.append(client)
            try:
                client.version()
            except LabError as exc:
                result["refusal"] = f"{type(exc).__name__}: {exc.args[0]}"
                break
            result["served"] = int(str(result["served"])) + 1
    except BaseException as exc:
        result["refusal"] = f"{type(exc).__name__}: {exc}"
    os.write(ready, json.dumps(result).encode())
    os.close(ready)
    os.read(release, 1)
    for client in clients:
        client.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_one_users_idle_connections_lock_no_other_user_out(labd_factory: DaemonFactory) -> None:
    d = labd_factory(
        ("--allow-uid", str(NOBODY), "--allow-uid", str(OTHER)),
        socket_name="run/labd.sock",
        root=passable(),
    )
    ready_r, ready_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(release_w)
            hog(d.socket, NOBODY, 256, ready_w, release_r)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(release_r)
    try:
        report = json.loads(os.read(ready_r, 65536).decode() or "{}")
        other = as_user(d.socket, OTHER, OTHER)
        with d.connect() as conn:  # labd's own user (root here) as well
            json.loads(conn.root.version())
    finally:
        os.write(release_w, b"x")
        os.close(release_w)
        os.close(ready_r)
        os.waitpid(pid, 0)
    assert other == "ok", f"uid {OTHER} after uid {NOBODY} opened {report}: {other}"
    assert report["served"] < 256, report
    refusal = str(report["refusal"])
    assert refusal.startswith("BusyError: ") and "connection limit" in refusal, refusal
    assert "--max-clients-per-user" in refusal, refusal


def test_a_refused_client_hears_labd_is_at_its_limit(labd_factory: DaemonFactory) -> None:
    d = labd_factory(("--max-clients", "2"))
    with ExitStack() as held:
        for _ in range(2):
            conn = held.enter_context(d.connect())
            json.loads(conn.root.version())
        with pytest.raises(BusyError) as info:
            labctl_connect(Address(path=d.socket)).version()
        assert isinstance(info.value, ConnectError)  # a kind of "cannot be served now"
        done = subprocess.run(
            [*labctl_command(), "--connect", f"unix:{d.socket}", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == EXIT_BUSY, (done.returncode, done.stderr)
    text = done.stderr.strip()
    assert "\n" not in text and "Traceback" not in text, text
    assert "at its connection limit" in text and "--max-clients" in text, text
    assert "cannot reach" not in text, text


# --- a slow answer is not an unreachable daemon ---------------------------------------------
def test_a_slow_spawn_is_not_reported_as_unreachable(labd_daemon: Daemon) -> None:
    address = Address(path=labd_daemon.socket)
    client = labctl_connect(address)
    client.call_timeout = 0.5  # shorter than the spawn below; a spawn has its own budget
    try:
        record = client.spawn("fake", 1, {"setup_delay": "1.5"})
        assert record["state"] in ("running", "starting"), record
        client.stop([record["id"]])
        impatient = Client(client._conn, address, spawn_timeout=0.3)
        with pytest.raises(LabError) as info:
            impatient.spawn("fake", 1, {"setup_delay": "1.5"})
        assert not isinstance(info.value, ConnectError), info.value
        text = info.value.args[0]
        assert "cannot reach" not in text and "spawn()" in text and "labctl status" in text
    finally:
        client.close()
    with labd_daemon.connect() as conn:  # the set it went on starting, stopped here
        wait_for(
            lambda: any(s["state"] == "running" for s in json.loads(conn.root.status())),
            20,
            "the slow set to start",
        )
        conn.root.stop("all")


# --- slow readers of large answers ---------------------------------------------------------
def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


def test_thirty_slow_tail_readers_cost_labd_little_memory(labd_daemon: Daemon) -> None:
    with labd_daemon.connect() as conn:
        params = {"printers": 8, "interval": 0.01, "shout": 4000}
        sid = json.loads(conn.root.spawn("fake", 1, json.dumps(params)))["id"]
        wait_for(lambda: json.loads(conn.root.tail(sid, 0, 1))["last"] >= 2500, 30, "a full ring")
        base = rss_mb(labd_daemon.pid)
        readers = [labd_daemon.connect() for _ in range(30)]
        try:
            for reader in readers:  # ask, and never read the answer
                rpyc.async_(reader.root.tail)(sid, 0, 10_000)
            peak = base
            deadline = time.monotonic() + 2.0  # a window to measure in, not to wait for
            while time.monotonic() < deadline:
                peak = max(peak, rss_mb(labd_daemon.pid))
                time.sleep(0.05)
        finally:
            for reader in readers:
                reader.close()
        answer = json.loads(conn.root.tail(sid, 0, 10_000))
        size = sum(len(text) + 1 for _, text in answer["lines"])
        conn.root.stop((sid,))
        after = rss_mb(labd_daemon.pid)
    print(f"\n30 tail readers: labd RSS {base:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB;")
    print(f"one answer holds {size} bytes of lines")
    assert size <= TAIL_MAX_BYTES, size
    assert peak - base < 40, (base, peak)
    assert after - base < 20, (base, after)
