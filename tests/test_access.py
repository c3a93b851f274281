"""Local access control: who can reach labd's unix socket, and how many at once.

Real users: the test (root) forks a child that drops to another uid, gid and groups
with setuid/setgid/setgroups, then connects with a plain rpyc client exactly as that
user's script would. Needs root; CI runs as root (the Makefile installs tools with apt).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import rpyc
from daemonkit import DaemonFactory
from helpers import Daemon, connect, in_child_as, one_line, short_dir, wait_for

import labd.errors as E

pytestmark = [
    pytest.mark.daemon,
    pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root"),
]

NOBODY = 65534
OTHER = 65533  # a uid nobody allowed
GROUP = 4242  # a group no account has as its primary one
OWN_DIR = "run/labd.sock"  # --allow-* need a directory of labd's own for the socket


def as_user(sock: str, uid: int, gid: int, groups: tuple[int, ...] = ()) -> str:
    """Connect to ``sock`` as ``uid``/``gid``/``groups`` in a forked child; "ok" if labd
    answered ``version``, else the error's class and message."""

    def version() -> bytes:
        try:
            with connect(sock) as conn:
                conn._config["sync_request_timeout"] = 10
                json.loads(conn.root.version())
            result = "ok"
        except BaseException as exc:
            result = f"{type(exc).__name__}: {exc}"
        return result.encode()[:4000]

    return in_child_as(uid, gid, groups, version).decode()


def passable() -> Path:
    """A daemon root others may pass through (not list) to reach its run/ directory."""
    root = short_dir()
    root.chmod(0o711)
    return root


def acl_of(path: str) -> bytes | None:
    try:
        return os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return None


def test_by_default_only_labds_own_user_and_root_get_in(labd_daemon: Daemon) -> None:
    sock = labd_daemon.socket
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(sock)).st_mode) == 0o700
    assert as_user(sock, 0, 0) == "ok"
    assert as_user(sock, NOBODY, NOBODY).startswith("PermissionError"), "the kernel refuses"


def test_allow_uid_admits_that_user_and_no_one_else(labd_factory: DaemonFactory) -> None:
    d = labd_factory(("--allow-uid", "nobody"), socket_name=OWN_DIR, root=passable())
    assert as_user(d.socket, NOBODY, NOBODY) == "ok"
    assert as_user(d.socket, OTHER, OTHER).startswith("PermissionError")
    assert as_user(d.socket, OTHER, NOBODY).startswith("PermissionError"), "uid, not group"
    assert stat.S_IMODE(os.stat(d.socket).st_mode) == 0o660  # group bits: the ACL mask
    assert os.stat(d.socket).st_gid == 0
    assert acl_of(d.socket) is not None


def test_allow_group_admits_its_members_by_supplementary_group(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(("--allow-group", str(GROUP)), socket_name=OWN_DIR, root=passable())
    st, dst = os.stat(d.socket), os.stat(os.path.dirname(d.socket))
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, GROUP)
    assert (stat.S_IMODE(dst.st_mode), dst.st_gid) == (0o750, GROUP)
    assert as_user(d.socket, NOBODY, NOBODY, (GROUP,)) == "ok"
    assert as_user(d.socket, NOBODY, GROUP) == "ok"  # as the primary group too
    assert as_user(d.socket, NOBODY, NOBODY).startswith("PermissionError")


def test_a_second_group_and_a_user_together(labd_factory: DaemonFactory) -> None:
    d = labd_factory(
        ("--allow-group", str(GROUP), "--allow-group", "4343", "--allow-uid", "1234"),
        socket_name=OWN_DIR,
        root=passable(),
    )
    st = os.stat(os.path.dirname(d.socket))
    assert st.st_gid == GROUP, "the first group named owns it, not the lowest"
    assert as_user(d.socket, NOBODY, NOBODY, (4343,)) == "ok"  # by ACL
    assert as_user(d.socket, 1234, 1234) == "ok"
    assert as_user(d.socket, NOBODY, NOBODY).startswith("PermissionError")


def test_the_authenticator_refuses_whom_the_file_system_lets_through(
    labd_daemon: Daemon, rpc: rpyc.Connection
) -> None:
    # an operator loosens the modes by hand: SO_PEERCRED still keeps the stranger out
    os.chmod(os.path.dirname(labd_daemon.socket), 0o711)
    os.chmod(labd_daemon.socket, 0o666)
    refused = as_user(labd_daemon.socket, NOBODY, NOBODY)
    assert refused.startswith("EOFError"), refused
    wait_for(lambda: "uid 65534" in labd_daemon.log_text(), 10, "labd to log the refusal")
    assert "refused local peer" in labd_daemon.log_text()
    assert json.loads(rpc.root.version())["pid"] == labd_daemon.pid  # still serving


def test_allow_refuses_a_directory_that_is_not_labds_own(labd_factory: DaemonFactory) -> None:
    d = labd_factory(("--allow-group", str(GROUP)), start=False)  # its dir holds the log
    mode = stat.S_IMODE(os.stat(d.root).st_mode)
    d.start(wait=False)
    assert d.wait() == 2
    assert "give labd a directory of its own" in d.log_text()
    assert stat.S_IMODE(os.stat(d.root).st_mode) == mode, "left as it was"


def test_a_directory_above_that_keeps_others_out_is_named_in_the_log(
    labd_factory: DaemonFactory,
) -> None:
    d = labd_factory(("--allow-group", str(GROUP)), socket_name=OWN_DIR)  # root is 0700
    assert as_user(d.socket, NOBODY, GROUP).startswith("PermissionError")
    assert f"{d.root} lets no other user through" in d.log_text()


def test_a_second_labd_that_fails_leaves_the_first_ones_directory_alone(
    labd_factory: DaemonFactory,
) -> None:
    first = labd_factory(("--allow-group", str(GROUP)), socket_name=OWN_DIR, root=passable())
    run_dir = os.path.dirname(first.socket)
    before = os.stat(run_dir)
    args = ("--allow-uid", "1234")
    second = labd_factory(args, root=first.root, socket_name=OWN_DIR, start=False)
    second.state_dir = first.root / "state2"
    second.start(wait=False)
    assert second.wait() == 2
    assert "already running" in second.log_text()
    after = os.stat(run_dir)
    assert (after.st_mode, after.st_gid) == (before.st_mode, before.st_gid)
    assert acl_of(run_dir) is None
    assert as_user(first.socket, NOBODY, NOBODY, (GROUP,)) == "ok"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--allow-uid", "no-such-user-x"),
        ("--allow-group", "no-such-group-x"),
        ("--allow-uid", "4294967296"),
        ("--allow-group", "99999999999"),
    ],
)
def test_unknown_names_are_one_line_usage_errors(
    labd_factory: DaemonFactory, option: str, value: str
) -> None:
    d = labd_factory((option, value), start=False)
    d.start(wait=False)
    assert d.wait() == 2
    text = d.log_text()
    assert value in text and "Traceback" not in text


@pytest.fixture
def capped(labd_factory: DaemonFactory) -> Iterator[Daemon]:
    yield labd_factory(("--max-clients", "3"))


def test_connections_above_max_clients_are_closed_at_once(capped: Daemon) -> None:
    with ExitStack() as held:
        conns = [held.enter_context(capped.connect()) for _ in range(3)]
        for conn in conns:
            json.loads(conn.root.version())
        with pytest.raises(EOFError), capped.connect() as extra:
            extra.root.version()
        wait_for(
            lambda: "refused a client: 3 clients are served already" in capped.log_text(),
            10,
            "labd to log the refusal",
        )
        conns[0].close()

        def one_more() -> bool:
            try:
                with capped.connect() as conn:
                    return bool(json.loads(conn.root.version()))
            except EOFError:
                return False

        wait_for(one_more, 10, "a free slot once a client left")
    with capped.connect() as conn:  # every slot free again
        with pytest.raises(E.NoSuchSet) as info:
            conn.root.inspect(99)
        one_line(info.value)
