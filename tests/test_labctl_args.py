"""labctl's argument grammar: addresses, KEY=VALUE, set ids, and where to connect."""

from __future__ import annotations

import click
import pytest

from labctl.argtypes import ADDRESS, KEY_VALUE, params_dict, stop_ids
from labctl.target import resolve_target
from labctl.tls import TlsFiles
from labd.errors import UsageError
from labd.protocol import DEFAULT_PORT, Address


@pytest.fixture(autouse=True)
def runtime_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/run/ipclab/labd.sock", Address(path="/run/ipclab/labd.sock")),
        ("/tmp/x.sock", Address(path="/tmp/x.sock")),
        ("labhost:18862", Address(host="labhost", port=18862)),
        ("127.0.0.1:1", Address(host="127.0.0.1", port=1)),
        ("[::1]:18861", Address(host="::1", port=18861)),
    ],
)
def test_address_type_parses(text: str, expected: Address) -> None:
    assert ADDRESS.convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["", "labhost", "unix:relative", "host:0", "host:x", ":80"])
def test_address_type_refuses_with_a_usage_error(text: str) -> None:
    with pytest.raises(click.BadParameter, match="address"):
        ADDRESS.convert(text, None, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("interval=0", ("interval", "0")),
        ("lock=yes", ("lock", "yes")),
        ("name=a=b c", ("name", "a=b c")),
        ("name=", ("name", "")),
    ],
)
def test_key_value_keeps_the_value_as_typed(text: str, expected: tuple[str, str]) -> None:
    assert KEY_VALUE.convert(text, None, None) == expected


@pytest.mark.parametrize("text", ["interval", "=0", "1x=2", "in terval=0"])
def test_key_value_refuses_malformed_pairs(text: str) -> None:
    with pytest.raises(click.BadParameter, match="expected KEY=VALUE"):
        KEY_VALUE.convert(text, None, None)


def test_params_dict_refuses_a_repeated_key() -> None:
    assert params_dict([("lock", "yes"), ("interval", "0")]) == {"lock": "yes", "interval": "0"}
    with pytest.raises(click.BadParameter, match="lock is given twice"):
        params_dict([("lock", "yes"), ("lock", "no")])


def test_stop_ids() -> None:
    assert stop_ids(["all"]) == "all"
    assert stop_ids(["3", "4"]) == (3, 4)
    with pytest.raises(click.BadParameter, match="stands alone"):
        stop_ids(["all", "3"])
    with pytest.raises(click.BadParameter, match="not a set id"):
        stop_ids(["x"])


def test_default_target_is_the_local_socket_with_autostart(tmp_path: object) -> None:
    target = resolve_target(None)
    assert target.address == Address(path=f"{tmp_path}/ipclab/labd.sock")
    assert target.autostart and target.tls is None
    assert not resolve_target(None, no_autostart=True).autostart


def test_an_explicit_address_never_autostarts() -> None:
    assert not resolve_target(Address(path="/tmp/other.sock")).autostart
    assert not resolve_target(Address(host="localhost", port=DEFAULT_PORT)).autostart


def test_tls_options_go_together() -> None:
    remote = Address(host="labhost", port=DEFAULT_PORT)
    target = resolve_target(remote, ("c.crt", "c.key", "ca.crt"))
    assert target.tls == TlsFiles(cert="c.crt", key="c.key", ca="ca.crt")
    with pytest.raises(UsageError, match="missing --tls-key, --tls-ca"):
        resolve_target(remote, ("c.crt", None, None))


def test_remote_tcp_needs_tls_and_unix_refuses_it() -> None:
    with pytest.raises(UsageError, match="not a loopback address"):
        resolve_target(Address(host="10.1.2.3", port=DEFAULT_PORT))
    with pytest.raises(UsageError, match="apply to HOST:PORT"):
        resolve_target(Address(path="/tmp/x.sock"), ("c", "k", "ca"))
    with pytest.raises(UsageError, match="apply to HOST:PORT"):
        resolve_target(None, ("c", "k", "ca"))
