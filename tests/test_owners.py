"""A shared lab host: each set's owner, who may stop it, who may shut labd down, and a
process quota per user.

Real users: forked children that drop to another uid (as tests/test_access.py does) and
call labd through labctl's own client; the command line once too, as another user.
"""

from __future__ import annotations

import contextlib
import encodings.idna  # noqa: F401 - loaded before the forks: other users cannot read it
import io
import json
import os
import pwd
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from daemonkit import DaemonFactory, fakes_env
from helpers import Daemon, free_port, in_child_as, wait_for
from test_access import GROUP, NOBODY, OTHER, passable

from labctl.client import Client, connect
from labd.errors import LabError
from labd.protocol import Address
from labd.store import Store
from labd.storefile import _SCHEMA


def user_name(uid: int) -> str:
    """How status names a local owner: the user's name, or ``uid N`` without one."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
OWN_DIR = "run/labd.sock"


def as_user(
    sock: str | Address, uid: int, call: Callable[[Client], Any], groups: tuple[int, ...] = ()
) -> Any:
    """``call(client)`` as ``uid`` (with ``groups``) in a forked child: its JSON-able
    result, or {"error": class, "message": ...} for a LabError."""

    def work() -> bytes:
        try:
            client = connect(sock if isinstance(sock, Address) else Address(path=sock))
            try:
                result: Any = call(client)
            finally:
                client.close()
        except LabError as exc:
            result = {"error": type(exc).__name__, "message": exc.args[0]}
        except BaseException as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        return json.dumps(result).encode()

    return json.loads(in_child_as(uid, uid, groups, work) or b"null")


def labctl_run(args: list[str]) -> dict[str, Any]:
    """labctl's command line, run in this process (a forked child as another user: it
    cannot exec the test's interpreter): its exit code and what it wrote on stderr."""
    from labctl.cli import run

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(args)
    return {"code": code, "stderr": err.getvalue()}


def shared_daemon(factory: DaemonFactory, *extra: str, **kw: Any) -> Daemon:
    args = ("--allow-uid", str(NOBODY), "--allow-uid", str(OTHER), *extra)
    return factory(args, env=fakes_env(), socket_name=OWN_DIR, root=passable(), **kw)


def shared_labd(factory: DaemonFactory, *extra: str) -> str:
    return shared_daemon(factory, *extra).socket


@ROOT
@pytest.mark.daemon
def test_only_the_owner_or_an_admin_stops_a_set(labd_factory: DaemonFactory) -> None:
    sock = shared_labd(labd_factory, "--admin-group", str(GROUP))
    theirs = as_user(sock, NOBODY, lambda c: c.spawn("fake", 1, {}))
    sid = theirs["id"]
    assert theirs["owner"] == user_name(NOBODY)
    mine = as_user(sock, OTHER, lambda c: c.spawn("fake", 1, {}))
    assert mine["owner"] == user_name(OTHER)
    # another user: refused by name, one line; "stop all" stops only their own
    refused = as_user(sock, OTHER, lambda c: c.stop([sid]))
    assert refused["error"] == "NotAllowed", refused
    assert f"set {sid} belongs to {user_name(NOBODY)}" in refused["message"]
    stopped = as_user(sock, OTHER, lambda c: c.stop("all"))
    assert [s["id"] for s in stopped] == [mine["id"]]
    down = as_user(sock, OTHER, lambda c: c.shutdown())
    assert down["error"] == "NotAllowed" and "only an admin" in down["message"], down
    # the command line says so in one line, exit 1, as that user
    args = ["--connect", f"unix:{sock}", "stop", str(sid)]
    # first here, so what it imports is loaded before the fork (the other user cannot
    # read this interpreter's files)
    assert labctl_run([*args[:-1], "999999"])["code"] == 1
    done = as_user(sock, OTHER, lambda _: labctl_run(args))
    assert done.get("code") == 1, done
    assert done["stderr"].count("\n") == 1 and "only its owner or an admin" in done["stderr"]
    status = as_user(sock, NOBODY, lambda c: c.status([sid]))
    assert status[0]["state"] == "running" and status[0]["owner"] == user_name(NOBODY)
    # a member of --admin-group may
    stopped = as_user(sock, OTHER, lambda c: c.stop([sid]), groups=(GROUP,))
    assert stopped[0]["state"] == "stopped", stopped
    # the owner is kept with the set's final record
    again = as_user(sock, OTHER, lambda c: c.status([sid]))
    assert again[0]["owner"] == user_name(NOBODY)


@ROOT
@pytest.mark.daemon
def test_labds_own_user_is_an_admin(labd_factory: DaemonFactory) -> None:
    sock = shared_labd(labd_factory)
    sid = as_user(sock, NOBODY, lambda c: c.spawn("fake", 1, {}))["id"]
    client = connect(Address(path=sock))  # root: labd's own user here
    try:
        assert client.stop([sid])[0]["state"] == "stopped"
        sets = client.status()
    finally:
        client.close()
    assert sets[0]["owner"] == user_name(NOBODY)


@ROOT
@pytest.mark.daemon
def test_max_per_user_is_a_quota_for_each_user(labd_factory: DaemonFactory) -> None:
    sock = shared_labd(labd_factory, "--max-per-user", "4")
    first = as_user(
        sock, NOBODY, lambda c: c.spawn("fake", 2, {})
    )  # 2 counters, 1 printer, 1 launcher
    assert first["state"] == "running", first
    over = as_user(sock, NOBODY, lambda c: c.spawn("fake", 1, {}))
    assert over["error"] == "LimitError", over
    assert "would bring nobody's sets to 7 processes" in over["message"]
    assert "--max-per-user" in over["message"]
    other = as_user(sock, OTHER, lambda c: c.spawn("fake", 2, {}))  # a quota of its own
    assert other["state"] == "running", other
    as_user(sock, NOBODY, lambda c: c.stop("all"))
    as_user(sock, OTHER, lambda c: c.stop("all"))
    again = as_user(sock, NOBODY, lambda c: c.spawn("fake", 2, {}))  # freed again
    assert again["state"] == "running", again
    as_user(sock, NOBODY, lambda c: c.stop("all"))


@ROOT
@pytest.mark.daemon
def test_a_plain_tcp_client_on_loopback_is_the_user_who_owns_its_socket(
    labd_factory: DaemonFactory,
) -> None:
    port = free_port()
    labd_factory(("--listen", f"127.0.0.1:{port}"), fakes=True)
    tcp = Address(host="127.0.0.1", port=port)
    theirs = as_user(tcp, NOBODY, lambda c: c.spawn("fake", 1, {}))
    assert theirs.get("owner") == user_name(NOBODY), theirs
    down = as_user(tcp, NOBODY, lambda c: c.shutdown())
    assert down["error"] == "NotAllowed", down
    stopped = as_user(tcp, NOBODY, lambda c: c.stop([theirs["id"]]))  # its own: yes
    assert stopped[0]["state"] == "stopped", stopped


def test_a_store_of_an_older_labd_gains_the_owner_column(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    old = sqlite3.connect(path)
    schema_1 = _SCHEMA.replace(",\n    owner TEXT", "")  # as labd 0.1.0 made it
    assert "owner" not in schema_1
    old.executescript(
        f"{schema_1};"
        "INSERT INTO sets (name, mechanism, counters, printers, params_json, state,"
        " created_at) VALUES ('old', 'queue', 2, 1, '{}', 'stopped', 1.0);"
        "PRAGMA user_version = 1;"
    )
    old.close()
    store = Store(path)
    try:
        assert store.get(1)["owner"] is None  # type: ignore[index]
        sid = store.new_set("queue", "new", 1, 1, {}, owner="alice")
        assert sid == 2 and store.get(sid)["owner"] == "alice"  # type: ignore[index]
    finally:
        store.close()
    store = Store(path)  # opened again: nothing to add twice
    try:
        assert store.get(2)["owner"] == "alice"  # type: ignore[index]
    finally:
        store.close()


@ROOT
@pytest.mark.daemon
def test_an_experiment_belongs_to_the_user_who_asked_for_it(labd_factory: DaemonFactory) -> None:
    sock = shared_labd(labd_factory, "--max-per-user", "4")
    spec = {"cases": ["fake"], "counters": [2], "seconds": 30, "warmup": 0.1, "repeat": 1}
    exp = as_user(sock, NOBODY, lambda c: c.compare(spec))
    eid = exp["id"]

    def run_set() -> Any:
        return as_user(sock, NOBODY, lambda c: c.experiment(eid))["runs"][0]["set_id"]

    sid = wait_for(run_set, 30, "the experiment's set")
    status = as_user(sock, OTHER, lambda c: c.status([sid]))
    assert status[0]["owner"] == user_name(NOBODY)
    # its 4 processes (2 counters, a printer, their launcher) fill nobody's quota, only nobody's
    over = as_user(sock, NOBODY, lambda c: c.spawn("fake", 1, {}))
    assert over["error"] == "LimitError" and "nobody's sets" in over["message"], over
    refused = as_user(sock, OTHER, lambda c: c.cancel_experiment(eid))
    assert refused["error"] == "NotAllowed", refused
    assert f"experiment {eid} belongs to {user_name(NOBODY)}" in refused["message"]
    done = as_user(sock, NOBODY, lambda c: c.cancel_experiment(eid))
    assert done["state"] in ("running", "cancelled"), done
    wait_for(
        lambda: as_user(sock, NOBODY, lambda c: c.experiment(eid))["state"] == "cancelled",
        30,
        "the experiment to be cancelled",
    )


@ROOT
@pytest.mark.daemon
def test_an_experiments_owner_is_kept_across_a_restart(labd_factory: DaemonFactory) -> None:
    first = shared_daemon(labd_factory)
    spec = {"cases": ["fake"], "seconds": 30, "warmup": 0.1, "repeat": 1}
    eid = as_user(first.socket, NOBODY, lambda c: c.compare(spec))["id"]

    def run_set() -> Any:
        runs = as_user(first.socket, NOBODY, lambda c: c.experiment(eid))["runs"]
        return runs and runs[0]["set_id"]

    sid = wait_for(run_set, 30, "the experiment's set")
    assert first.stop(signal.SIGTERM) == 0
    sock = shared_daemon(labd_factory, state_dir=first.state_dir).socket
    mine = as_user(sock, OTHER, lambda c: c.compare({**spec, "seconds": 0.3}))["id"]
    # anyone may look; each experiment says whose it is, from the store, as its sets do
    listed = as_user(sock, OTHER, lambda c: c.experiments(5))
    assert {x["id"]: x["owner"] for x in listed} == {
        eid: user_name(NOBODY),
        mine: user_name(OTHER),
    }, listed
    e = as_user(sock, OTHER, lambda c: c.experiment(eid))
    assert e["state"] == "interrupted" and e["owner"] == user_name(NOBODY), e
    assert as_user(sock, OTHER, lambda c: c.inspect(sid))["owner"] == user_name(NOBODY)
    refused = as_user(sock, NOBODY, lambda c: c.cancel_experiment(mine))
    assert refused["error"] == "NotAllowed", refused
    assert f"experiment {mine} belongs to {user_name(OTHER)}" in refused["message"]
