"""labctl's client and autostart against a fake labd service over real sockets.

The fake serves the daemon's API shape with canned answers, so these tests need no labd;
end-to-end tests with a real labd live elsewhere.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rpyc
from rpyc.utils.authenticators import SSLAuthenticator
from rpyc.utils.server import ThreadedServer

from labctl.autostart import Launch, open_client, start_daemon
from labctl.client import Client, connect
from labctl.target import Target
from labctl.tls import TlsFiles
from labd.errors import ConnectError, LabError, NoSuchSet, UsageError
from labd.protocol import Address

# The fake server's connection threads may trip over their socket when the server closes
# under them (rpyc's own teardown race, server side only): not what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")

SAFE = {"allow_public_attrs": False, "allow_all_attrs": False, "allow_pickle": False,
        "allow_setattr": False, "allow_delattr": False}  # fmt: skip


class FakeLabd(rpyc.Service):
    def exposed_version(self) -> str:
        return json.dumps({"version": "0", "protocol": 1, "pid": os.getpid()})

    def exposed_status(self, ids: tuple[int, ...] = ()) -> str:
        if 99 in ids:
            raise NoSuchSet("no set 99 (see: labctl status)")
        if 5 in ids:
            time.sleep(1.0)
        return json.dumps([{"id": i} for i in ids])

    def exposed_stop(self, ids: Any) -> str:
        return json.dumps({"ids": ids if type(ids) is str else list(ids)})

    def exposed_spawn(self, mechanism: str, counters: int, params_json: str) -> str:
        return json.dumps({"mechanism": mechanism, "counters": counters,
                           "params": json.loads(params_json)})  # fmt: skip

    def exposed_tail(self, set_id: int, after: int = 0, limit: int = 100) -> str:
        raise ZeroDivisionError("boom\nsecond line")

    def exposed_mechanisms(self) -> str:
        return "not json"


def _serve(server: ThreadedServer) -> threading.Thread:
    """Start serving in a thread; return once the server listens."""
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.active:
        assert time.monotonic() < deadline, "the fake labd did not start listening"
        time.sleep(0.005)
    return thread


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ThreadedServer]:
    server = ThreadedServer(FakeLabd, socket_path=str(tmp_path / "fake.sock"),
                            protocol_config=SAFE)  # fmt: skip
    thread = _serve(server)
    yield server
    server.close()
    thread.join(5)


@pytest.fixture
def client(served: ThreadedServer) -> Iterator[Client]:
    c = connect(Address(path=served.port))
    yield c
    c.close()


def test_answers_are_decoded_and_arguments_are_plain_values(client: Client) -> None:
    assert client.version()["protocol"] == 1
    assert client.status([1, 2]) == [{"id": 1}, {"id": 2}]
    assert client.stop("all") == {"ids": "all"}
    assert client.stop([3]) == {"ids": [3]}
    assert client.spawn("queue", 3, {"interval": "0"}) == {
        "mechanism": "queue", "counters": 3, "params": {"interval": "0"}
    }  # fmt: skip


def test_a_remote_lab_error_arrives_as_our_class_with_one_line(client: Client) -> None:
    with pytest.raises(NoSuchSet) as info:
        client.status([99])
    assert type(info.value) is NoSuchSet
    assert info.value.args == ("no set 99 (see: labctl status)",)
    assert "Traceback" not in str(info.value)
    assert not client.closed  # the connection survives a refusal


def test_an_unknown_remote_error_shows_its_first_line(client: Client) -> None:
    with pytest.raises(LabError, match=r"^labd failed: ZeroDivisionError: boom$"):
        client.tail(1)


def test_malformed_json_is_a_lab_error(client: Client) -> None:
    with pytest.raises(LabError, match="malformed JSON"):
        client.mechanisms()


def test_a_call_without_answer_in_time_is_a_connect_error(client: Client) -> None:
    client.call_timeout = 0.2
    with pytest.raises(ConnectError, match=r"no answer to status\(\) within 0.2 s"):
        client.status([5])
    assert client.closed


def test_a_lost_connection_is_a_connect_error(client: Client, served: ThreadedServer) -> None:
    client.version()
    served.close()
    with pytest.raises(ConnectError, match="connection was lost"):
        client.version()
    assert client.closed


# --- TLS -------------------------------------------------------------------------------


def _pki(tmp: Path, name: str, hosts: list[str]) -> dict[str, Path]:
    """A CA, a server certificate for ``hosts`` and a client certificate, as files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(cn: str, key: Any, issuer: Any, issuer_key: Any, ca: bool, sans: list[str]) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder().subject_name(subject)
            .issuer_name(issuer or subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:  # made for a server or a client, as labd tls init makes them
            usage = ExtendedKeyUsageOID.SERVER_AUTH if sans else ExtendedKeyUsageOID.CLIENT_AUTH
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if sans:
            import ipaddress

            names: list[x509.GeneralName] = []
            for h in sans:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(h)))
                except ValueError:
                    names.append(x509.DNSName(h))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(stem: str, key: Any, crt: Any) -> None:
        files[f"{stem}.key"] = tmp / f"{name}-{stem}.key"
        files[f"{stem}.crt"] = tmp / f"{name}-{stem}.crt"
        files[f"{stem}.key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip
        files[f"{stem}.crt"].write_bytes(crt.public_bytes(serialization.Encoding.PEM))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert(f"{name} CA", ca_key, None, None, True, [])
    write("ca", ca_key, ca)
    for stem, sans in (("server", hosts), ("client", [])):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, key, cert(f"{name} {stem}", key, ca.subject, ca_key, False, sans))
    return files


@contextlib.contextmanager
def tls_server(pki: dict[str, Path]) -> Iterator[Address]:
    """The fake labd on 127.0.0.1, requiring client certificates signed by pki's CA."""
    auth = SSLAuthenticator(str(pki["server.key"]), str(pki["server.crt"]),
                            ca_certs=str(pki["ca.crt"]), cert_reqs=ssl.CERT_REQUIRED)  # fmt: skip
    server = ThreadedServer(FakeLabd, hostname="127.0.0.1", port=0, authenticator=auth,
                            protocol_config=SAFE)  # fmt: skip
    thread = _serve(server)
    try:
        yield Address(host="127.0.0.1", port=server.port)
    finally:
        server.close()
        thread.join(5)


def client_files(pki: dict[str, Path], ca: dict[str, Path] | None = None) -> TlsFiles:
    return TlsFiles(str(pki["client.crt"]), str(pki["client.key"]), str((ca or pki)["ca.crt"]))


def test_mutual_tls_verifies_the_daemon_and_presents_our_certificate(tmp_path: Path) -> None:
    pki = _pki(tmp_path, "lab", ["localhost", "127.0.0.1"])
    with tls_server(pki) as address:
        with_tls = connect(address, client_files(pki))
        assert with_tls.version()["protocol"] == 1
        with_tls.close()


def test_tls_refuses_a_daemon_signed_by_another_ca(tmp_path: Path) -> None:
    pki = _pki(tmp_path, "lab", ["127.0.0.1"])
    other = _pki(tmp_path, "other", ["127.0.0.1"])
    with tls_server(pki) as address, pytest.raises(ConnectError, match="not trusted"):
        connect(address, client_files(other))


def test_tls_checks_the_host_name(tmp_path: Path) -> None:
    pki = _pki(tmp_path, "lab", ["labhost.example"])
    with tls_server(pki) as address, pytest.raises(ConnectError, match=r"mismatch.*--host"):
        connect(address, client_files(pki))


def test_the_daemon_refuses_a_client_certificate_of_another_ca(tmp_path: Path) -> None:
    pki = _pki(tmp_path, "lab", ["127.0.0.1"])
    other = _pki(tmp_path, "other", [])
    refused = r"labd ended the TLS session: .* \(is --tls-cert signed by the CA labd trusts\?\)"
    with tls_server(pki) as address, pytest.raises(ConnectError, match=refused):
        connect(address, client_files(other, ca=pki)).version()


def test_unreadable_tls_files_are_a_usage_error(tmp_path: Path) -> None:
    files = TlsFiles(cert="nope.crt", key="nope.key", ca=str(tmp_path / "missing-ca.crt"))
    with pytest.raises(UsageError, match=r"cannot load the TLS CA .*no such file"):
        connect(Address(host="127.0.0.1", port=1), files)


# --- autostart -------------------------------------------------------------------------

FAKE_DAEMON = """
import json, os, sys, threading, time, rpyc
from rpyc.utils.server import ThreadedServer
done = threading.Event()
class Fake(rpyc.Service):
    def exposed_version(self):
        return json.dumps({"pid": os.getpid()})
    def exposed_shutdown(self):
        done.set()
        return json.dumps({"stopping": True})
server = ThreadedServer(Fake, socket_path=sys.argv[1],
                        protocol_config={"allow_public_attrs": False, "allow_pickle": False})
threading.Thread(target=server.start, daemon=True).start()
done.wait(30)
deadline = time.monotonic() + 5  # as labd does: its clients take their answer and leave
while server.clients and time.monotonic() < deadline:
    time.sleep(0.01)
server.close()
os.unlink(sys.argv[1])
"""


@pytest.fixture
def local_target(tmp_path: Path) -> Target:
    return Target(Address(path=str(tmp_path / "run" / "labd.sock")), autostart=True)


@pytest.fixture
def started_pids() -> Iterator[list[int]]:
    """Every fake daemon a test started is gone after it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        deadline = time.monotonic() + 5
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(pid, os.WNOHANG) == (0, 0):  # reap it: it is our child
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)


def test_autostart_starts_one_daemon_for_two_racing_clients(
    local_target: Target, tmp_path: Path, started_pids: list[int]
) -> None:
    assert local_target.address.path
    said: list[str] = []
    launch = Launch(command=(sys.executable, "-c", FAKE_DAEMON, local_target.address.path),
                    log_dir=tmp_path / "state", say=said.append)  # fmt: skip
    clients: list[Client] = []

    def one() -> None:
        clients.append(open_client(local_target, launch=launch))

    racers = [threading.Thread(target=one) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(20)
    started_pids += [int(m) for line in said for m in re.findall(r"pid (\d+)", line)]
    assert len(said) == 1, said
    assert re.fullmatch(
        r"started labd in the background \(pid \d+\)\nits log: \S*labd\.log", said[0]
    )
    assert len(clients) == 2
    assert clients[0].version()["pid"] == clients[1].version()["pid"] == started_pids[0]
    clients[0].shutdown()
    for c in clients:
        c.close()


def test_autostart_reports_a_daemon_that_exits_at_start(
    local_target: Target, tmp_path: Path
) -> None:
    launch = Launch(command=(sys.executable, "-c", "raise SystemExit(3)"),
                    log_dir=tmp_path / "state", say=lambda line: None)  # fmt: skip
    with pytest.raises(ConnectError, match=r"labd exited at start with code 3 \(log: .*labd.log\)"):
        start_daemon(local_target, launch)


def test_no_autostart_for_an_explicit_address(tmp_path: Path) -> None:
    target = Target(Address(path=str(tmp_path / "labd.sock")), autostart=False)
    launch = Launch(command=(sys.executable, "-c", "raise SystemExit(9)"), log_dir=tmp_path)
    with pytest.raises(ConnectError, match="is it running"):
        open_client(target, launch=launch)
    assert not (tmp_path / "labd.log").exists()
