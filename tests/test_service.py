"""The rpyc service over a real unix socket, and labd's life as a process.

Each test talks to a real ``labd`` subprocess with a plain rpyc client, exactly as a
script using the documented API would (``labctl`` is not involved).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import rpyc
from daemonkit import DaemonFactory, fakes_env
from fakes import BAD
from helpers import (
    CLIENT_CONFIG,
    Daemon,
    free_port,
    one_line,
    short_dir,
    wait_for,
)
from rpyc.core import consts

import labd.errors as E
from labd.protocol import PROCESS_KEYS, SET_KEYS
from labd.server.service import MAX_JSON
from labd.testing import running

pytestmark = pytest.mark.daemon

FAST = json.dumps({"interval": 0.05})


def labd_class(exc: BaseException) -> type:
    """The labd.errors class a remote exception was rebuilt as (rpyc derives from it)."""
    return next(c for c in type(exc).__mro__ if vars(E).get(c.__name__) is c)


def call(conn: rpyc.Connection, method: str, *args: Any) -> Any:
    result = getattr(conn.root, method)(*args)
    assert type(result) is str, f"{method} returned {type(result).__name__}, not JSON text"
    return json.loads(result)


def spawn(
    conn: rpyc.Connection, mechanism: str = "fake", counters: int = 2, params: str = FAST
) -> int:
    return int(call(conn, "spawn", mechanism, counters, params)["id"])


def status(conn: rpyc.Connection, sid: int) -> dict[str, Any]:
    return call(conn, "status", (sid,))[0]  # type: ignore[no-any-return]


def counting(conn: rpyc.Connection, ids: list[int]) -> bool:
    return all(s["attempted"] > 0 for s in call(conn, "status", tuple(ids)))


# --- the API -------------------------------------------------------------------------------
def test_every_method_answers_json_text(module_labd: Daemon, module_rpc: rpyc.Connection) -> None:
    conn = module_rpc
    version = call(conn, "version")
    assert version["pid"] == module_labd.pid
    assert version["protocol"] == 1 and version["version"]
    assert version["address"] == f"unix:{module_labd.socket}"

    names = {m["name"] for m in call(conn, "mechanisms")}
    assert {"shared", "manager", "queue", "pipe", "fake"} <= names

    started = call(conn, "spawn", "fake", 2, FAST)
    sid = started["id"]
    assert set(SET_KEYS) <= set(started)
    assert started["state"] == "running"
    assert started["params"]["interval"] == 0.05
    for proc in started["processes"]:
        assert set(PROCESS_KEYS) <= set(proc)
    wait_for(lambda: status(conn, sid)["attempted"] >= 2, 5, "increments")
    assert sid in [s["id"] for s in call(conn, "status")]
    assert [s["id"] for s in call(conn, "status", ())] == [s["id"] for s in call(conn, "status")]

    inspected = call(conn, "inspect", sid)
    assert inspected["id"] == sid and len(inspected["per_counter"]) == 2
    assert [e["state"] for e in inspected["events"]][:2] == ["starting", "running"]
    wait_for(lambda: call(conn, "tail", sid)["lines"], 5, "a printer line")
    tail = call(conn, "tail", sid, 0, 10)
    assert tail["id"] == sid and tail["lines"][-1][1].startswith("Time: ")

    (stopped,) = call(conn, "stop", (sid,))
    assert stopped["state"] == "stopped"
    assert stopped["lost"] == stopped["attempted"] - stopped["value"] == 0
    other = spawn(conn)
    assert [s["id"] for s in call(conn, "stop", "all")] == [other]
    assert call(conn, "stop", "all") == []
    assert call(conn, "inspect", sid)["per_counter"]  # a stopped set can still be inspected


@pytest.mark.parametrize(
    ("method", "args", "error", "fragment"),
    [
        ("spawn", ("fake", "3", "{}"), E.UsageError, "integer"),
        ("spawn", ("fake", 3.0, "{}"), E.UsageError, "integer"),
        ("spawn", ("fake", True, "{}"), E.UsageError, "integer"),
        ("spawn", ("fake", -1, "{}"), E.UsageError, "positive"),
        ("spawn", ("fake", 0, "{}"), E.UsageError, "positive"),
        ("spawn", ("fake", 1_000_000, "{}"), E.LimitError, "limit"),
        ("spawn", ("fake", 2**80, "{}"), E.LimitError, "limit"),
        ("spawn", (42, 1, "{}"), E.UsageError, "mechanism must be a string"),
        ("spawn", ("x" * 1000, 1, "{}"), E.UsageError, "longer"),
        ("spawn", ("nosuch", 1, "{}"), E.MechanismError, "'nosuch'"),
        ("spawn", ("fake", 1, "{bad json"), E.UsageError, "not valid JSON"),
        ("spawn", ("fake", 1, "[1, 2]"), E.UsageError, "JSON object"),
        ("spawn", ("fake", 1, '"text"'), E.UsageError, "JSON object"),
        ("spawn", ("fake", 1, '{"interval": {"a": 1}}'), E.UsageError, "parameter values"),
        ("spawn", ("fake", 1, '{"interval": [1]}'), E.UsageError, "parameter values"),
        ("spawn", ("fake", 1, b"{}"), E.UsageError, "params_json must be a string"),
        ("spawn", ("fake", 1, " " * (MAX_JSON + 1)), E.UsageError, "longer"),
        ("spawn", ("fake", 1, '{"interval": NaN}'), E.ParamError, "finite"),
        ("spawn", ("fake", 1, '{"interval": 1e400}'), E.ParamError, "finite"),
        ("spawn", ("fake", 1, '{"interval": "soon"}'), E.ParamError, "interval"),
        ("spawn", ("fake", 1, '{"level": 99}'), E.ParamError, "level"),
        ("spawn", ("fake", 1, '{"colour": 1}'), E.ParamError, "'colour'"),
        ("status", ([1],), E.UsageError, "tuple"),
        ("status", ("1",), E.UsageError, "tuple"),
        ("status", ((1, "2"),), E.UsageError, "integer"),
        ("status", ((0,),), E.UsageError, "between"),
        ("status", ((-1,),), E.UsageError, "between"),
        ("status", ((2**70,),), E.UsageError, "between"),
        ("status", (tuple(range(1, 10_002)),), E.UsageError, "tuple"),
        ("stop", ([1],), E.UsageError, "tuple"),
        ("stop", ("some",), E.UsageError, "tuple"),
        ("stop", (None,), E.UsageError, "tuple"),
        ("inspect", ("1",), E.UsageError, "integer"),
        ("inspect", (1.0,), E.UsageError, "integer"),
        ("inspect", (True,), E.UsageError, "integer"),
        ("tail", (1, -1), E.UsageError, "after"),
        ("tail", (1, 0, 0), E.UsageError, "limit"),
        ("tail", (1, 0, 10**9), E.UsageError, "limit"),
        ("tail", (1, 0, 2**100), E.UsageError, "limit"),
    ],
)
def test_strict_argument_checks(
    module_rpc: rpyc.Connection, method: str, args: tuple[Any, ...], error: type, fragment: str
) -> None:
    before = [s["id"] for s in call(module_rpc, "status")]
    with pytest.raises(E.LabError) as info:
        getattr(module_rpc.root, method)(*args)
    assert labd_class(info.value) is error, info.value
    assert fragment in one_line(info.value)
    assert call(module_rpc, "version")["pid"]  # the same connection still serves
    assert [s["id"] for s in call(module_rpc, "status")] == before  # nothing was started


def test_a_dict_argument_is_refused(module_rpc: rpyc.Connection) -> None:
    with pytest.raises(E.UsageError, match="params_json must be a string"):
        module_rpc.root.spawn("fake", 1, {"interval": 1})  # would travel as a netref
    assert call(module_rpc, "version")


@pytest.mark.parametrize("method", ["status", "inspect", "stop", "tail"])
def test_unknown_ids_raise_nosuchset(module_rpc: rpyc.Connection, method: str) -> None:
    arg: Any = 987654 if method in ("inspect", "tail") else (987654,)
    with pytest.raises(E.NoSuchSet) as info:
        getattr(module_rpc.root, method)(arg)
    assert labd_class(info.value) is E.NoSuchSet
    assert "no set 987654" in one_line(info.value)


PRIVATE = [
    "_lab",
    "__dict__",
    "exposed_version",
    "get_service_name",
    "_conn",
    "__class__",
    "_rpyc_getattr",
    "_guard",
    "_on_shutdown",
    "_caller",
    "on_connect",
    "exposed_shutdown",
    "__init__",
    "__reduce_ex__",
]


@pytest.mark.parametrize("name", PRIVATE)
def test_private_attributes_are_refused(module_rpc: rpyc.Connection, name: str) -> None:
    # straight through the protocol, as a hostile client would (the netref keeps some
    # names such as __dict__ local and would never ask)
    with pytest.raises(AttributeError):
        module_rpc.sync_request(consts.HANDLE_GETATTR, module_rpc.root, name)
    with pytest.raises(AttributeError):
        module_rpc.sync_request(consts.HANDLE_CALLATTR, module_rpc.root, name, (), ())
    assert call(module_rpc, "version")


def test_no_attribute_can_be_set_or_deleted(module_rpc: rpyc.Connection) -> None:
    with pytest.raises(AttributeError):
        module_rpc.sync_request(consts.HANDLE_SETATTR, module_rpc.root, "version", "x")
    with pytest.raises(AttributeError):
        module_rpc.sync_request(consts.HANDLE_DELATTR, module_rpc.root, "version")
    with pytest.raises(AttributeError):
        module_rpc.root._lab  # noqa: B018 - the plain client path too
    assert call(module_rpc, "version")


def test_mechanism_plugins_that_break_the_contract_are_named(module_rpc: rpyc.Connection) -> None:
    listed = {m["name"]: m for m in call(module_rpc, "mechanisms")}
    for name in BAD:
        assert name in listed[name]["error"] or "NoSuchClass" in listed[name]["error"]
        with pytest.raises(E.MechanismError, match=f"mechanism '{name}' failed to load"):
            module_rpc.root.spawn(name, 1, "{}")
    assert "error" not in listed["fake"]
    sid = spawn(module_rpc, "fake", 1)
    wait_for(lambda: status(module_rpc, sid)["attempted"] > 0, 5, "a good plugin to work")
    call(module_rpc, "stop", (sid,))


def test_a_failing_setup_fails_its_set_only(
    module_labd: Daemon, module_rpc: rpyc.Connection
) -> None:
    module_labd.allow_tracebacks = True  # labd logs the plugin's traceback, on purpose
    with pytest.raises(E.SetError, match="setup exploded on purpose") as info:
        module_rpc.root.spawn("broken_setup", 2, "{}")
    one_line(info.value)
    failed = [s for s in call(module_rpc, "status") if s["mechanism"] == "broken_setup"]
    assert failed and all(s["state"] == "failed" for s in failed)
    assert call(module_rpc, "version")


# --- the socket ----------------------------------------------------------------------------
def test_socket_is_private(labd_factory: DaemonFactory) -> None:
    d = labd_factory(socket_name="run/labd.sock")
    assert stat.S_ISSOCK(os.stat(d.socket).st_mode)
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(Path(d.socket).parent).st_mode) == 0o700


def test_a_stale_socket_is_replaced(labd_factory: DaemonFactory) -> None:
    root = short_dir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(root / "labd.sock"))
    stale.close()  # the file stays, nobody listens: what a killed labd leaves
    d = labd_factory(root=root)
    with d.connect() as conn:
        assert call(conn, "version")["pid"] == d.pid
    assert "removed stale socket" in d.log_text()


def test_a_file_in_the_way_is_not_removed(labd_factory: DaemonFactory) -> None:
    root = short_dir()
    (root / "labd.sock").write_text("not a socket")
    d = labd_factory(root=root, start=False)
    d.start(wait=False)
    assert d.wait() == 2
    assert "is not a socket" in d.log_text()
    assert (root / "labd.sock").read_text() == "not a socket"


def test_a_second_labd_on_the_same_socket_refuses_to_start(labd_factory: DaemonFactory) -> None:
    first = labd_factory()
    inode = os.stat(first.socket).st_ino
    second = labd_factory(root=first.root, state_dir=short_dir() / "state", start=False)
    second.start(wait=False)
    assert second.wait() == 2
    lines = [line for line in second.log_text().splitlines() if line.strip()]
    assert lines == [
        f"labd: labd is already running at unix:{first.socket} (stop it: labctl shutdown)"
    ]
    assert os.stat(first.socket).st_ino == inode  # the first one's socket is untouched
    with first.connect() as conn:
        assert call(conn, "version")["pid"] == first.pid


def test_garbage_on_the_socket_does_not_disturb_other_clients(
    labd_daemon: Daemon,
    rpc: rpyc.Connection,
) -> None:
    # labd drops such a client with one log line, no traceback (teardown checks the log)
    sid = spawn(rpc)
    errors: list[BaseException] = []
    done = threading.Event()
    calls = 0

    def client() -> None:
        nonlocal calls
        try:
            with labd_daemon.connect() as conn:
                while not done.is_set() or calls < 50:
                    call(conn, "status", (sid,))
                    calls += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=client)
    worker.start()
    try:
        bad_frame = struct.pack("!LB", 16, 0) + b"\xff" * 16 + b"\n"  # rpyc framing, junk body
        for payload in (os.urandom(4096), bad_frame, b"\x00" * 100_000):
            with socket.socket(socket.AF_UNIX) as raw:
                raw.settimeout(10)
                raw.connect(labd_daemon.socket)
                with contextlib.suppress(OSError):  # the daemon may have hung up: fine
                    raw.sendall(payload)
        with socket.socket(socket.AF_UNIX) as raw:  # a malformed frame gets an answer
            raw.settimeout(10)
            raw.connect(labd_daemon.socket)
            raw.sendall(bad_frame)
            raw.recv(100)  # a reply or the end: either way, not a hang
        silent = socket.socket(socket.AF_UNIX)  # a client that never speaks
        silent.connect(labd_daemon.socket)
        try:
            with labd_daemon.connect() as conn:
                assert call(conn, "version")["pid"] == labd_daemon.pid
        finally:
            silent.close()
    finally:
        done.set()
        worker.join(30)
    assert not errors, errors
    assert calls >= 50
    assert status(rpc, sid)["state"] == "running"
    assert "internal error" not in labd_daemon.log_text()


def test_each_set_is_a_process_group_that_its_stop_ends_whole(
    labd_daemon: Daemon, rpc: rpyc.Connection
) -> None:
    sid = spawn(rpc, "fake", 2, json.dumps({"interval": 0.05, "helper": True}))
    other = spawn(rpc, "fake", 1)
    procs = {i: [p["pid"] for p in call(rpc, "inspect", i)["processes"]] for i in (sid, other)}

    def grouped() -> dict[int, set[int]]:  # each worker joins its set's group as it starts
        groups = {i: {os.getpgid(pid) for pid in pids} for i, pids in procs.items()}
        return groups if all(len(g) == 1 for g in groups.values()) else {}

    groups = wait_for(grouped, 10, "each set's workers in one process group")
    assert groups[sid] != groups[other]
    assert os.getpgid(labd_daemon.pid) not in groups[sid] | groups[other]

    def helpers() -> list[psutil.Process]:
        found = []
        for pid in procs[sid]:
            with contextlib.suppress(psutil.Error):
                found += [c for c in psutil.Process(pid).children() if c.name() == "sleep"]
        return found if len(found) == 2 else []

    left = wait_for(helpers, 10, "each counter's helper process")
    assert {os.getpgid(h.pid) for h in left} == groups[sid]
    call(rpc, "stop", (sid,))
    wait_for(lambda: not running(left), 5, "the helpers to end with their set")
    assert status(rpc, other)["state"] == "running"


# --- life and death of the daemon ------------------------------------------------------------
MIXED = [
    ("fake", 2, {"interval": 0.05, "helper": True}),  # its counters leave `sleep` behind
    ("queue", 2, {"interval": 0}),
    ("manager", 2, {"interval": 0.05}),
    ("pipe", 2, {"interval": 0}),
    ("shared", 2, {"interval": 0}),
]


def start_mixed(conn: rpyc.Connection) -> list[int]:
    ids = [spawn(conn, m, n, json.dumps(p)) for m, n, p in MIXED]
    wait_for(lambda: counting(conn, ids), 10, "every set to count")
    return ids


def test_sigterm_stops_every_set_and_leaves_nothing(labd_factory: DaemonFactory) -> None:
    d = labd_factory(fakes=True)
    with d.connect() as conn:
        ids = start_mixed(conn)
    kids = d.track()
    assert len(kids) >= 1 + 2 * len(MIXED)  # forkserver, workers, Manager ...
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 8
    assert not os.path.exists(d.socket)
    d.assert_no_leftovers()

    again = labd_factory(fakes=True, root=d.root, state_dir=d.state_dir)
    with again.connect() as conn:
        for s in call(conn, "status", tuple(ids)):
            assert s["state"] == "stopped", s
            assert s["in_flight"] == 0 and s["lost"] == s["attempted"] - s["value"]
            assert s["attempted"] > 0
        assert call(conn, "status") == []
        assert spawn(conn) > max(ids)


def test_after_sigkill_children_end_and_sets_are_interrupted(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(fakes=True)
    with d.connect() as conn:
        ids = start_mixed(conn)
    kids = d.track()
    assert sum(k.name() == "sleep" for k in kids) == 2, "the fake counters' helpers run"
    assert d.stop(signal.SIGKILL) == -signal.SIGKILL
    left: list[psutil.Process] = []

    def all_gone() -> bool:
        nonlocal left
        left = running(kids)
        return not left

    wait_for(all_gone, 5, "every child to end after labd was killed")
    assert os.path.exists(d.socket)  # nobody could remove it

    again = labd_factory(fakes=True, root=d.root, state_dir=d.state_dir)
    with again.connect() as conn:
        assert [s["state"] for s in call(conn, "status", tuple(ids))] == ["interrupted"] * len(ids)
        inspected = call(conn, "inspect", ids[0])
        assert inspected["events"][-1]["state"] == "interrupted"
    assert "were running when labd last stopped" in again.log_text()


def test_shutdown_stops_the_daemon(labd_daemon: Daemon, rpc: rpyc.Connection) -> None:
    sid = spawn(rpc, "fake", 2)
    wait_for(lambda: status(rpc, sid)["attempted"] > 0, 5, "increments")
    labd_daemon.track()
    assert call(rpc, "shutdown") == {"stopping": True}
    assert labd_daemon.wait() == 0
    assert not os.path.exists(labd_daemon.socket)
    labd_daemon.assert_no_leftovers()


def test_tcp_on_a_public_address_without_tls_is_refused(labd_factory: DaemonFactory) -> None:
    d = labd_factory(("--listen", f"0.0.0.0:{free_port()}"), start=False)
    d.start(wait=False)
    assert d.wait() == 2
    lines = [line for line in d.log_text().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "without TLS" in lines[0] and "--tls-cert" in lines[0]
    assert not os.path.exists(d.socket)


def test_tcp_on_loopback_serves_a_plain_rpyc_client(labd_factory: DaemonFactory) -> None:
    port = free_port()
    d = labd_factory(("--listen", f"127.0.0.1:{port}"))
    conn = rpyc.connect("127.0.0.1", port, config=dict(CLIENT_CONFIG))
    try:
        version = call(conn, "version")
        assert version["pid"] == d.pid
        assert f"127.0.0.1:{port}" in version["address"]
        assert any(m["name"] == "queue" for m in call(conn, "mechanisms"))
        with pytest.raises(E.NoSuchSet):
            conn.root.inspect(12345)
    finally:
        conn.close()
    assert "without TLS" in d.log_text()


def test_a_plugin_that_raises_at_import_does_not_stop_labd(
    labd_factory: DaemonFactory,
    tmp_path: Path,
) -> None:
    (tmp_path / "ipl_boom_plugin.py").write_text('raise RuntimeError("boom at import")\n')
    env = fakes_env("boom=ipl_boom_plugin:Thing")
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    d = labd_factory(env=env, start=False)
    try:
        d.start()
    finally:
        if d.proc is not None and d.proc.poll() is not None:
            d.returncode = d.proc.returncode  # it died: nothing for teardown to stop
            d.allow_tracebacks = True
    with d.connect() as conn:
        listed = {m["name"]: m for m in call(conn, "mechanisms")}
        assert "boom at import" in listed["boom"]["error"]
        spawn(conn, "fake", 1)


def test_a_second_labd_on_the_same_state_dir_leaves_the_first_alone(
    labd_factory: DaemonFactory,
) -> None:
    first = labd_factory(fakes=True)
    with first.connect() as conn:
        sid = spawn(conn, "fake", 2)
        wait_for(lambda: status(conn, sid)["attempted"] > 0, 5, "increments")
        workers = [psutil.Process(p["pid"]) for p in call(conn, "inspect", sid)["processes"]]
        second = labd_factory(fakes=True, state_dir=first.state_dir, start=False)
        second.start(wait=False)
        try:
            second.wait_ready()  # it may start (sharing) or refuse (exit 2): either is fine
        except AssertionError:
            second.returncode = second.proc.poll() if second.proc else None
        before = status(conn, sid)["attempted"]
        wait_for(lambda: status(conn, sid)["attempted"] > before + 2, 3, "the first to go on")
        assert status(conn, sid)["state"] == "running"
        assert len(running(workers)) == len(workers)


@pytest.mark.parametrize("where", ["a-file/state", "/proc/ipclab-state"])
def test_a_state_dir_that_cannot_be_made_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("in the way")  # not a directory; /proc refuses mkdir
    target = where if where.startswith("/") else str(tmp_path / where)
    sock = tmp_path / "s.sock"
    proc = subprocess.run(
        [sys.executable, "-m", "labd", "--socket", str(sock), "--state-dir", target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith(
        f"labd: cannot make the state directory {target}: "
    ), lines
    assert not sock.exists()
