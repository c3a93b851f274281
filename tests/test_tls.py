"""Remote control over mutual TLS, end to end: ``labd tls init``, a real labd with a TLS
listener, and the real ``labctl`` (and raw TLS clients) against it.

Traffic goes only to loopback, or to a network namespace this test makes for itself
(``ipclab-test-<pid>``, a veth pair with link-local addresses) to stand for another host.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from daemonkit import DaemonFactory
from helpers import (
    CLIENT_CONFIG,
    Daemon,
    free_port,
    labctl_command,
    labd_command,
    short_dir,
    wait_for,
)
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

from labd.server.auth import HANDSHAKE_TIMEOUT

FILES = ("ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key")
SERVER_NAME = "labd.test"
CMD_TIMEOUT = 30


# --- helpers ---------------------------------------------------------------------------
def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("LABCTL_CONNECT", "LABCTL_TLS_CERT", "LABCTL_TLS_KEY", "LABCTL_TLS_CA"):
        env.pop(name, None)
    return env


def run(cmd: list[str], prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *cmd],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def tls_init(directory: Path, *hosts: str) -> str:
    args = [a for h in hosts for a in ("--host", h)]
    done = run([*labd_command(), "tls", "init", str(directory), *args])
    assert done.returncode == 0, done.stderr
    return done.stdout


@dataclass(frozen=True)
class Pki:
    """One ``labd tls init`` directory."""

    dir: Path

    def __getattr__(self, name: str) -> str:  # pki.server_crt -> ".../server.crt"
        filename = name.replace("_", ".")
        if filename not in FILES:
            raise AttributeError(name)
        return str(self.dir / filename)

    def labd_args(self) -> tuple[str, ...]:
        return (
            "--tls-cert",
            self.server_crt,
            "--tls-key",
            self.server_key,
            "--tls-ca",
            self.ca_crt,
        )


def labctl(
    address: str, cert: str, key: str, ca: str, *command: str, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run(
        [
            *labctl_command(),
            "--connect",
            address,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            ca,
            *command,
        ],
        prefix,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    text = done.stderr.strip()
    assert text and "\n" not in text and "Traceback" not in text, done.stderr
    return text


def client_context(
    ca: str, cert: str | None = None, key: str | None = None, tls12: bool = False
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def refused(ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> str:
    """Handshake and read: labd must end the connection before rpyc says anything."""
    with socket.create_connection((host, port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                # TLS 1.3: the client's side of the handshake completes before the server
                # has checked our certificate; its verdict arrives as an alert on read.
                data = tls.recv(1)
        except ssl.SSLError as exc:
            return f"ssl error: {exc.reason}"
        except ConnectionResetError:
            return "reset"
    assert data == b"", f"labd sent {data!r} to a client it should have refused"
    return "closed"


def tls_ready(ctx: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> bool:
    try:
        with (
            socket.create_connection((host, port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except OSError:
        return False


def status_json(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    sets = json.loads(done.stdout)
    assert isinstance(sets, list)
    return sets


# --- fixtures --------------------------------------------------------------------------
def new_pki() -> Iterator[Pki]:
    """A CA of its own with a server and a client certificate, removed afterwards."""
    root = short_dir()
    try:
        tls_init(root / "pki", SERVER_NAME)
        yield Pki(root / "pki")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    yield from new_pki()


@pytest.fixture(scope="module")
def other_pki() -> Iterator[Pki]:
    """A second, unrelated CA with its own server and client certificates."""
    yield from new_pki()


@dataclass
class TlsLabd:
    daemon: Daemon
    port: int  # 127.0.0.1, which the server certificate names
    other_port: int  # 127.0.0.2, which it does not

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def tls_labd(pki: Pki) -> Iterator[TlsLabd]:
    factory = DaemonFactory()
    try:
        port, other = free_port(), free_port()
        d = factory(
            ("--listen", f"127.0.0.1:{port}", "--listen", f"127.0.0.2:{other}", *pki.labd_args())
        )
        good = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
        wait_for(lambda: tls_ready(good, port), 10, "the TLS listener")
        yield TlsLabd(d, port, other)
    finally:
        factory.finish()  # SIGTERM: exit 0, no leftovers, no traceback in its log


# --- labd tls init ---------------------------------------------------------------------
def strict_handshake(pki_dir: Path, hostname: str) -> None:
    """labd's server context and a client with OpenSSL's strict X.509 checks (Python
    3.13's default) complete a handshake with these files, over a socket pair."""
    from labd.server.tls import server_context

    server_ctx = server_context(
        str(pki_dir / "server.crt"), str(pki_dir / "server.key"), str(pki_dir / "ca.crt")
    )
    assert server_ctx.verify_flags & ssl.VERIFY_X509_STRICT
    client_ctx = client_context(
        str(pki_dir / "ca.crt"), str(pki_dir / "client.crt"), str(pki_dir / "client.key")
    )
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    seen: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as tls:
                seen["client"] = tls.getpeercert()
                tls.sendall(b"ok")
        except Exception as exc:  # reported by the assertion below
            seen["error"] = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=hostname) as tls:
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(10)
    assert "error" not in seen, seen
    assert seen["client"]


def test_tls_init_writes_a_ca_and_two_certificates(tmp_path: Path) -> None:
    target = tmp_path / "new" / "pki"
    cmd = [
        *labd_command(),
        "tls",
        "init",
        str(target),
        "--host",
        "lab1.example",
        "--host",
        "192.0.2.7",
        "--host",
        "LAB1.example.",
        "--days",
        "30",
    ]
    # umask 000: the modes must not depend on the caller's umask
    done = subprocess.run(
        ["sh", "-c", 'umask 000; exec "$@"', "sh", *cmd],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        env=clean_env(),
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in FILES:
        mode = stat.S_IMODE((target / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644), (name, oct(mode))

    # the two commands of the set-up, ready to paste
    lines = done.stdout.splitlines()
    labd_line = next(line.strip() for line in lines if line.strip().startswith("labd "))
    assert labd_line == (
        f"labd --listen 0.0.0.0:18861 --tls-cert {target}/server.crt "
        f"--tls-key {target}/server.key --tls-ca {target}/ca.crt"
    )
    labctl_line = next(line.strip() for line in lines if line.strip().startswith("labctl "))
    assert labctl_line.startswith(
        "labctl --connect lab1.example:18861 --tls-cert client.crt "
        "--tls-key client.key --tls-ca ca.crt"
    )

    def load(name: str) -> x509.Certificate:
        return x509.load_pem_x509_certificate((target / name).read_bytes())

    ca, server, client = load("ca.crt"), load("server.crt"), load("client.crt")
    for cert in (ca, server, client):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        assert cert.issuer == ca.subject
        days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
        assert 30 <= days <= 31
    ca.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)

    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value == (
        x509.BasicConstraints(ca=True, path_length=0)
    )
    ca_usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_usage.key_cert_sign and ca_usage.crl_sign and not ca_usage.digital_signature
    for leaf, purpose in (
        (server, ExtendedKeyUsageOID.SERVER_AUTH),
        (client, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        exts = leaf.extensions
        assert exts.get_extension_for_class(x509.BasicConstraints).value.ca is False
        usage = exts.get_extension_for_class(x509.KeyUsage)
        assert usage.critical and usage.value.digital_signature
        assert not usage.value.key_cert_sign
        assert list(exts.get_extension_for_class(x509.ExtendedKeyUsage).value) == [purpose]
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["lab1.example", "localhost"]
    ips = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
    assert ips == ["192.0.2.7", "127.0.0.1", "::1"]
    assert not client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).critical
    strict_handshake(target, "lab1.example")
    strict_handshake(target, "192.0.2.7")

    # nothing is overwritten without --force
    before = {name: (target / name).read_bytes() for name in FILES}
    again = run([*labd_command(), "tls", "init", str(target), "--host", "lab1.example"])
    assert again.returncode == 1
    assert "--force" in again.stderr and "Traceback" not in again.stderr
    assert {name: (target / name).read_bytes() for name in FILES} == before
    forced = run([*labd_command(), "tls", "init", str(target), "--host", "lab2.example", "--force"])
    assert forced.returncode == 0, forced.stderr
    for name in FILES:
        assert (target / name).read_bytes() != before[name]
        mode = stat.S_IMODE((target / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o644)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temporary left


@pytest.mark.parametrize("bad", ["bad_name", "0.0.0.0", "lab1:18861", "10.1.2", "-x.example"])
def test_tls_init_refuses_a_host_a_certificate_cannot_name(tmp_path: Path, bad: str) -> None:
    done = run([*labd_command(), "tls", "init", str(tmp_path / "pki"), "--host", bad])
    assert done.returncode == 2, done.stderr
    assert "--host" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "pki").exists()


# --- labd refuses to start ------------------------------------------------------------
def start_refused(args: tuple[str, ...]) -> str:
    """labd with these options exits 2 at once with one line on stderr."""
    root = short_dir()
    try:
        done = run(
            [
                *labd_command(),
                "--socket",
                str(root / "s"),
                "--state-dir",
                str(root / "state"),
                *args,
            ]
        )
        text = assert_one_line_error(done, 2)
        assert text.startswith("labd: ")
        assert not (root / "s").exists()
        return text
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.daemon
def test_plain_tcp_on_a_public_address_is_refused() -> None:
    text = start_refused(("--listen", f"0.0.0.0:{free_port()}"))
    assert "without TLS" in text and "labd tls init" in text


@pytest.mark.daemon
def test_incomplete_or_bad_tls_files_are_refused(pki: Pki, other_pki: Pki) -> None:
    listen = ("--listen", f"0.0.0.0:{free_port()}")
    text = start_refused((*listen, "--tls-cert", pki.server_crt))
    assert "go together" in text and "--tls-key, --tls-ca" in text
    text = start_refused((*listen, "--tls-cert", pki.server_crt, "--tls-key", pki.server_key))
    assert "missing --tls-ca" in text
    text = start_refused(pki.labd_args())  # TLS, but nothing to listen on
    assert "--listen" in text
    missing = str(pki.dir / "nope.crt")
    text = start_refused(
        (*listen, "--tls-cert", pki.server_crt, "--tls-key", pki.server_key, "--tls-ca", missing)
    )
    assert f"cannot read --tls-ca {missing}: no such file" in text
    text = start_refused(
        (
            *listen,
            "--tls-cert",
            pki.server_crt,
            "--tls-key",
            other_pki.server_key,
            "--tls-ca",
            pki.ca_crt,
        )
    )
    assert "is not the key of --tls-cert" in text
    text = start_refused(
        (*listen, "--tls-cert", pki.server_key, "--tls-key", pki.server_key, "--tls-ca", pki.ca_crt)
    )
    assert f"--tls-cert {pki.server_key} is not a PEM certificate" in text
    text = start_refused(
        (
            *listen,
            "--tls-cert",
            pki.server_crt,
            "--tls-key",
            pki.server_key,
            "--tls-ca",
            str(pki.dir),
        )
    )
    assert "is a directory" in text


# --- a TLS listener --------------------------------------------------------------------
@pytest.mark.daemon
def test_labctl_with_its_certificate_is_served(tls_labd: TlsLabd, pki: Pki) -> None:
    done = labctl(tls_labd.address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json")
    assert all("id" in s for s in status_json(done))
    done = labctl(
        f"localhost:{tls_labd.port}",
        pki.client_crt,
        pki.client_key,
        pki.ca_crt,
        "mechanisms",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert "queue" in {m["name"] for m in json.loads(done.stdout)}
    log = tls_labd.daemon.log_text()
    assert "TLS client 127.0.0.1:" in log and "CN=ipclab client,O=ipclab" in log
    assert "without TLS" not in log


@pytest.mark.daemon
def test_a_client_without_a_certificate_is_refused(tls_labd: TlsLabd, pki: Pki) -> None:
    for tls12 in (False, True):
        # TLS 1.2: the handshake fails; 1.3: labd's alert ends the first read
        how = refused(client_context(pki.ca_crt, tls12=tls12), tls_labd.port)
        assert how.startswith("ssl error"), how
    # plain rpyc on the TLS port: labd reads no rpyc from it, so no answer ever comes
    with socket.create_connection(("127.0.0.1", tls_labd.port), timeout=10) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with pytest.raises((EOFError, OSError)):
            conn = connect_stream(SocketStream(raw), config=dict(CLIENT_CONFIG))
            conn.root.version()
    wait_for(
        lambda: tls_labd.daemon.log_text().count("refused TLS client") >= 3,
        10,
        "labd to log the refusals",
    )
    assert "no client certificate" in tls_labd.daemon.log_text()
    # and it keeps serving
    status_json(
        labctl(tls_labd.address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json")
    )


@pytest.mark.daemon
def test_a_client_certificate_from_another_ca_is_refused(
    tls_labd: TlsLabd, pki: Pki, other_pki: Pki
) -> None:
    foreign = client_context(pki.ca_crt, other_pki.client_crt, other_pki.client_key)
    how = refused(foreign, tls_labd.port)
    assert how.startswith("ssl error"), how
    done = labctl(
        tls_labd.address, other_pki.client_crt, other_pki.client_key, pki.ca_crt, "status"
    )
    text = assert_one_line_error(done, 3)
    # labd closes gently, so its alert reaches labctl (not a reset)
    assert "labd ended the TLS session: tlsv1 alert unknown ca" in text
    # a certificate of the right CA but made for a server (no clientAuth) is refused too
    done = labctl(tls_labd.address, pki.server_crt, pki.server_key, pki.ca_crt, "status")
    assert "unsupported certificate" in assert_one_line_error(done, 3)
    log = tls_labd.daemon.log_text()
    assert "certificate not accepted" in log
    assert "unsuitable certificate purpose" in log
    status_json(
        labctl(tls_labd.address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json")
    )


@pytest.mark.daemon
def test_labctl_refuses_a_server_certificate_for_another_name(
    tls_labd: TlsLabd, pki: Pki, other_pki: Pki
) -> None:
    # 127.0.0.2 is loopback, but not a name the certificate holds
    done = labctl(
        f"127.0.0.2:{tls_labd.other_port}", pki.client_crt, pki.client_key, pki.ca_crt, "status"
    )
    text = assert_one_line_error(done, 3)
    assert "mismatch" in text and "labd tls init --host" in text
    # a labd whose certificate another CA signed is not trusted either
    done = labctl(tls_labd.address, pki.client_crt, pki.client_key, other_pki.ca_crt, "status")
    text = assert_one_line_error(done, 3)
    assert "not trusted" in text


@pytest.mark.daemon
def test_a_client_that_resets_right_after_the_handshake_leaves_no_trace(
    tls_labd: TlsLabd, pki: Pki
) -> None:
    good = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
    before = tls_labd.daemon.log_text().count("TLS client 127.0.0.1:")
    for _ in range(30):
        raw = socket.create_connection(("127.0.0.1", tls_labd.port), timeout=10)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with good.wrap_socket(raw, server_hostname="127.0.0.1"):
            pass  # close at once: a reset, with labd's session tickets unread
    wait_for(
        lambda: tls_labd.daemon.log_text().count("TLS client 127.0.0.1:") >= before + 30,
        10,
        "labd to admit the 30 clients",
    )
    status_json(
        labctl(tls_labd.address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json")
    )
    log = tls_labd.daemon.log_text()
    assert "Traceback" not in log and "ERROR" not in log, log


@pytest.mark.daemon
def test_a_silent_client_does_not_block_others(tls_labd: TlsLabd, pki: Pki) -> None:
    silent = [socket.create_connection(("127.0.0.1", tls_labd.port), timeout=10) for _ in range(8)]
    # one that starts a handshake and stops half-way
    half = socket.create_connection(("127.0.0.1", tls_labd.port), timeout=10)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    silent.append(half)
    try:
        started = time.monotonic()
        for _ in range(2):
            status_json(
                labctl(
                    tls_labd.address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json"
                )
            )
        served_in = time.monotonic() - started
        # served while they hang: none of them has been dropped yet
        for s in silent:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        assert served_in < HANDSHAKE_TIMEOUT

        def all_dropped() -> bool:
            for s in silent:
                try:
                    if s.recv(1) != b"":
                        raise AssertionError("labd sent data to a silent client")
                except BlockingIOError:
                    return False
                except ConnectionResetError:
                    pass
            return True

        # then labd gives up on them after its handshake timeout
        wait_for(all_dropped, HANDSHAKE_TIMEOUT + 10, "labd to drop the silent clients")
    finally:
        for s in silent:
            s.close()
    assert f"no TLS handshake within {HANDSHAKE_TIMEOUT:g} s" in tls_labd.daemon.log_text()


@pytest.mark.daemon
def test_peers_without_a_certificate_take_no_place_of_those_with_one(pki: Pki) -> None:
    factory = DaemonFactory()
    silent: list[socket.socket] = []
    try:
        port = free_port()
        d = factory(("--listen", f"127.0.0.1:{port}", "--max-clients", "1", *pki.labd_args()))
        good = client_context(pki.ca_crt, pki.client_crt, pki.client_key)
        wait_for(lambda: tls_ready(good, port), 10, "the TLS listener")
        # three connections that never start a handshake, more than --max-clients
        silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        address = f"127.0.0.1:{port}"
        done = labctl(address, pki.client_crt, pki.client_key, pki.ca_crt, "status", "--json")
        assert status_json(done) == []
        assert "refused a client" not in d.log_text()  # nor were the silent ones, yet
    finally:
        for s in silent:
            s.close()
        factory.finish()


# --- another host: a network namespace of our own ---------------------------------------
@dataclass(frozen=True)
class Netns:
    name: str
    host_addr: str  # in the root namespace, where labd listens
    peer_addr: str  # inside the namespace, where labctl runs

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=CMD_TIMEOUT)


@pytest.fixture
def netns() -> Iterator[Netns]:
    """A namespace ``ipclab-test-<pid>`` joined to this one by a veth pair, each end with
    a link-local address of a /30 of its own (chosen by pid in 169.254.1.0-169.254.254.255,
    leaving out 169.254.169.0/24, where clouds keep their metadata service); removed at
    teardown."""
    if shutil.which("ip") is None:
        pytest.fail("the ip command (iproute2) is missing: `make test` installs it")
    if os.geteuid() != 0:
        pytest.skip(
            "another host: creating a network namespace needs root; the loopback tests cover TLS"
        )
    pid = os.getpid()
    name, veth_host, veth_peer = f"ipclab-test-{pid}", f"iplt{pid}h", f"iplt{pid}n"
    third, fourth = divmod((pid % 16192) * 4, 256)  # 253 x 64 subnets
    third += 1 if third < 168 else 2  # 1..254 without 169
    host_addr = f"169.254.{third}.{fourth + 1}"
    peer_addr = f"169.254.{third}.{fourth + 2}"
    if f" {host_addr}/" in _ip("-o", "addr").stdout:
        pytest.fail(f"{host_addr} is already in use on this host")
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(
            f"another host: cannot create a network namespace here "
            f"({made.stderr.strip()}); the loopback tests cover TLS"
        )
    try:
        for args in (
            ("link", "add", veth_host, "type", "veth", "peer", "name", veth_peer),
            ("link", "set", veth_peer, "netns", name),
            ("addr", "add", f"{host_addr}/30", "dev", veth_host),
            ("link", "set", veth_host, "up"),
            ("-n", name, "addr", "add", f"{peer_addr}/30", "dev", veth_peer),
            ("-n", name, "link", "set", veth_peer, "up"),
            ("-n", name, "link", "set", "lo", "up"),
        ):
            done = _ip(*args)
            assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"
        yield Netns(name, host_addr, peer_addr)
    finally:
        _ip("netns", "del", name)  # takes its end of the veth pair, and so the pair, along
        if _ip("link", "show", veth_host).returncode == 0:
            _ip("link", "del", veth_host)
        assert _ip("link", "show", veth_host).returncode != 0, f"{veth_host} is left"
        assert name not in _ip("netns", "list").stdout, f"namespace {name} is left"


@pytest.mark.daemon
def test_labctl_on_another_host(netns: Netns, labd_factory: DaemonFactory) -> None:
    root = short_dir()
    try:
        out = tls_init(root / "pki", netns.host_addr)
        pki = Pki(root / "pki")
        assert f"labctl --connect {netns.host_addr}:18861" in out
        port = free_port()
        d = labd_factory(("--listen", f"{netns.host_addr}:{port}", *pki.labd_args()))
        address = f"{netns.host_addr}:{port}"

        def answered() -> subprocess.CompletedProcess[str] | None:
            done = labctl(
                address,
                pki.client_crt,
                pki.client_key,
                pki.ca_crt,
                "status",
                "--json",
                prefix=netns.exec_prefix(),
            )
            return done if done.returncode == 0 else None

        # the listener may lag labd's unix socket by a moment: poll, then check for real
        done = wait_for(answered, 15, f"labctl in {netns.name} to reach {address}")
        status_json(done)
        assert f"TLS client {netns.peer_addr}:" in d.log_text()
        # without a certificate of the CA, the other host gets nothing
        done = labctl(
            address,
            pki.server_crt,
            pki.server_key,
            pki.ca_crt,
            "status",
            prefix=netns.exec_prefix(),
        )
        assert_one_line_error(done, 3)
        # nor does a plain rpyc client: labd reads no rpyc before the TLS handshake
        plain = run(
            [
                sys.executable,
                "-c",
                (
                    "import rpyc\n"
                    f"c = rpyc.connect({netns.host_addr!r}, {port})\n"
                    "print(c.root.version())\n"
                ),
            ],
            prefix=netns.exec_prefix(),
        )
        assert plain.returncode != 0 and "EOFError" in plain.stderr, plain.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
