"""Certificate writing for remote control (``labd tls init``): a private CA of labd's
own that signs one server certificate (for the hosts clients use) and one client
certificate. EC P-256 keys, SHA-256 signatures, unencrypted PKCS#8 keys::

    ca.crt      the CA (BasicConstraints CA, path length 0; keyCertSign, cRLSign)
    ca.key      its key: signs certificates; labd does not need it at run time
    server.crt  labd's certificate: serverAuth, the named hosts as DNS/IP SANs, plus
                localhost, 127.0.0.1 and ::1 (for an ssh tunnel or a local test)
    server.key
    client.crt  labctl's certificate: clientAuth (labd refuses a server certificate)
    client.key

Keys are written mode 0600 and certificates 0644, in a directory created 0700.
Loading and checking them at run time is :mod:`labd.server.tls`. ``cryptography`` is
imported inside the functions that make certificates, so ``labd``'s command line, which
reads :data:`DEFAULT_DAYS`, does not pay for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labd.errors import UsageError
from labd.protocol import DEFAULT_PORT
from labd.server.tls import certificate_info

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

DEFAULT_DAYS = 825
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.crt", "server.key"
CLIENT_CERT, CLIENT_KEY = "client.crt", "client.key"
FILES = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CLIENT_CERT, CLIENT_KEY)
KEY_MODE, CERT_MODE, DIR_MODE = 0o600, 0o644, 0o700
#: certificates start this long before "now", for clocks a little behind ours
CLOCK_SKEW = dt.timedelta(minutes=5)

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
Host = str | ipaddress.IPv4Address | ipaddress.IPv6Address


# --- names -------------------------------------------------------------------------------
def check_host(text: str) -> Host:
    """A DNS name (lower case) or an IP address that a certificate can name."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        pass
    else:
        if addr.is_unspecified:
            raise UsageError(
                f"--host {text}: that is the listen-everywhere address; "
                "name the address clients connect to"
            )
        return addr
    name = raw.rstrip(".").lower()
    if ":" in name:
        raise UsageError(f"--host {text}: give a host name or an address, without a port")
    labels = name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()  # "10.1.2" is neither an address nor a name
    ):
        raise UsageError(f"--host {text}: not a valid DNS name or IP address")
    return name


def server_hosts(names: Iterable[str]) -> list[Host]:
    """The named hosts, checked and without repeats, then the loopback names."""
    out: list[Host] = []
    for item in [*names, *LOOPBACK_HOSTS]:
        host = check_host(item)
        if host not in out:
            out.append(host)
    return out


def url_host(host: Host) -> str:
    """The host as it appears in ``HOST:PORT``: ``[::1]`` for IPv6."""
    return f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)


# --- making ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    """What :func:`init` wrote."""

    directory: Path
    hosts: tuple[Host, ...]
    not_after: dt.datetime
    files: tuple[Path, ...]


def make_material(
    hosts: Sequence[Host], days: int = DEFAULT_DAYS, now: dt.datetime | None = None
) -> dict[str, bytes]:
    """PEM text of the six files (name -> bytes); ``hosts`` as from :func:`server_hosts`."""
    if not hosts:
        raise UsageError("a server certificate needs at least one --host")
    if days < 1:
        raise UsageError("--days must be at least 1")
    start = (now or dt.datetime.now(dt.UTC)) - CLOCK_SKEW
    ca = Issuer.new(str(hosts[0]), start, start + CLOCK_SKEW + dt.timedelta(days=days))
    server_crt, server_key = ca.server(hosts)
    client_crt, client_key = ca.client()
    return {
        CA_CERT: ca.cert_pem,
        CA_KEY: ca.key_pem,
        SERVER_CERT: server_crt,
        SERVER_KEY: server_key,
        CLIENT_CERT: client_crt,
        CLIENT_KEY: client_key,
    }


def init(
    directory: Path, names: Sequence[str], days: int = DEFAULT_DAYS, force: bool = False
) -> Issued:
    """Write the CA, server and client files into ``directory`` (``labd tls init``).

    Raises :class:`UsageError` for a bad host name and :class:`FileExistsError` (with the
    existing paths in ``args[1]``) if a file is there already and ``force`` is false;
    nothing is written then.
    """
    hosts = server_hosts(names)
    directory = directory.absolute()
    targets = [directory / f for f in FILES]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
    if existing and not force:
        raise FileExistsError(
            f"{', '.join(p.name for p in existing)} already in {directory}: "
            "give --force to replace them",
            existing,
        )
    material = make_material(hosts, days)
    if not directory.is_dir():
        directory.mkdir(mode=DIR_MODE, parents=True)
        os.chmod(directory, DIR_MODE)
    written: list[Path] = []
    try:
        for path in targets:
            mode = KEY_MODE if path.suffix == ".key" else CERT_MODE
            _write(path, material[path.name], mode, replace=force)
            written.append(path)
    except BaseException:
        if not force:  # a half-written set is worse than none
            for path in written:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise
    return Issued(
        directory, tuple(hosts), certificate_info(material[SERVER_CERT])[2], tuple(targets)
    )


def _write(path: Path, data: bytes, mode: int, replace: bool) -> None:
    """Write a file with exactly ``mode``; create it anew, or replace it atomically."""
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    os.close(fd)
    if replace:
        try:
            os.replace(target, path)
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink()
            raise


# --- the certificates -------------------------------------------------------------------
_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _name(common: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ipclab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common[:64]),
        ]
    )


def _usage(**on: bool) -> x509.KeyUsage:
    from cryptography import x509

    flags = dict.fromkeys(_USAGES, False)
    flags.update(on)
    return x509.KeyUsage(**flags)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class Issuer:
    """A new CA, and the certificates it signs, all valid from ``start`` to ``end``."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def new(cls, first_host: str, start: dt.datetime, end: dt.datetime) -> Issuer:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        # a name of its own: verifiers look issuers up by name, and two CAs made for the
        # same host must not be mistaken for each other ("unable to get local issuer")
        name = _name(f"ipclab CA {ski.digest[:4].hex()} for {first_host}")
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert, start, end)

    @property
    def cert_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def server(self, hosts: Sequence[Host]) -> tuple[bytes, bytes]:
        """(certificate, key) PEM for a server reached as any of ``hosts``."""
        from cryptography import x509
        from cryptography.x509.oid import ExtendedKeyUsageOID

        sans: list[x509.GeneralName] = [
            x509.DNSName(h) if isinstance(h, str) else x509.IPAddress(h) for h in hosts
        ]
        return self._leaf(str(hosts[0]), ExtendedKeyUsageOID.SERVER_AUTH, sans)

    def client(self) -> tuple[bytes, bytes]:
        """(certificate, key) PEM for a client."""
        from cryptography.x509.oid import ExtendedKeyUsageOID

        return self._leaf("ipclab client", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    def _leaf(
        self, common: str, purpose: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.start)
            .not_valid_after(self.end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def next_steps(issued: Issued) -> str:
    """What ``labd tls init`` prints: what it wrote, and the two commands to run."""
    d = issued.directory
    first = issued.hosts[0]
    everywhere = "[::]" if ":" in str(first) else "0.0.0.0"

    def q(path: Path) -> str:
        return shlex.quote(str(path))

    names = ", ".join(str(h) for h in issued.hosts)
    return "\n".join(
        [
            f"wrote {', '.join(p.name for p in issued.files)} in {d}",
            f"labd's certificate is valid for {names} until {issued.not_after:%Y-%m-%d}",
            "\non the lab host, run:",
            f"  labd --listen {everywhere}:{DEFAULT_PORT} --tls-cert {q(d / SERVER_CERT)} "
            f"--tls-key {q(d / SERVER_KEY)} --tls-ca {q(d / CA_CERT)}",
            f"\ncopy {CLIENT_CERT}, {CLIENT_KEY} and {CA_CERT} to the controlling host, then run:",
            f"  labctl --connect {url_host(first)}:{DEFAULT_PORT} --tls-cert {CLIENT_CERT} "
            f"--tls-key {CLIENT_KEY} --tls-ca {CA_CERT} status",
            f"\nkeep {d / 'ca.key'} private: it signs certificates, and labd does not need it.",
        ]
    )
