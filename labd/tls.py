"""TLS material for remote control: making it (``labd tls init``) and loading it.

:func:`init` writes a private CA and the two certificates it signs, all EC P-256 keys
and SHA-256 signatures::

    ca.crt      the CA (BasicConstraints CA, path length 0; keyCertSign, cRLSign)
    ca.key      its key: signs certificates; labd does not need it at run time
    server.crt  labd's certificate: serverAuth, the named hosts as DNS/IP SANs, plus
                localhost, 127.0.0.1 and ::1 (for an ssh tunnel or a local test)
    server.key
    client.crt  labctl's certificate: clientAuth (labd refuses a server certificate)
    client.key

Keys are written mode 0600 and certificates 0644, in a directory created 0700.
:func:`server_context` loads labd's side into an :class:`ssl.SSLContext` that demands a
client certificate signed by the CA, with a one-line :class:`ConfigError` for every way
the files can be wrong. ``cryptography`` is imported only where certificates are made
or read, so importing this module costs no more than :mod:`ssl`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import logging
import os
import re
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labd.errors import ConfigError, UsageError

log = logging.getLogger("labd.tls")

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
    from labd.certs import Issuer  # cryptography: only when certificates are made

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


# --- reading -----------------------------------------------------------------------------
def certificate_info(pem: bytes) -> tuple[str, list[str], dt.datetime, dt.datetime]:
    """(subject, SANs, not_after, not_before) of the first certificate in ``pem``."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificates(pem)[0]
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        sans = [str(v) for v in ext.value.get_values_for_type(x509.DNSName)]
        sans += [str(v) for v in ext.value.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        sans = []
    return (
        cert.subject.rfc4514_string(),
        sans,
        cert.not_valid_after_utc,
        cert.not_valid_before_utc,
    )


def peer_subject(cert: dict[str, Any] | None) -> str:
    """``CN=ipclab client,O=ipclab`` from :meth:`ssl.SSLSocket.getpeercert`'s dict."""
    if not cert:
        return "(no certificate)"
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    text = ",".join(reversed(parts)) or "(empty subject)"
    serial = cert.get("serialNumber")
    return f"{text} serial {serial}" if serial else text


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}


def server_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """labd's TLS context: TLS 1.2+, its certificate, client certificates from ``ca`` only.

    Every problem with the files is a one-line :class:`ConfigError` naming the option.
    """
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        _readable(flag, path)
    _pem_certificates("--tls-cert", cert)
    _pem_certificates("--tls-ca", ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.options |= ssl.OP_NO_COMPRESSION

    def no_password() -> str:
        raise ConfigError(f"--tls-key {key} is encrypted: labd needs a key without a passphrase")

    try:
        context.load_cert_chain(certfile=cert, keyfile=key, password=no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--tls-key {key} is not the key of --tls-cert {cert}") from None
        raise ConfigError(f"--tls-key {key} is not a PEM private key ({_reason(exc)})") from None
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load --tls-ca {ca}: {_reason(exc)}") from None
    return context


def check_server_files(cert: str, key: str, ca: str) -> str:
    """Refuse an expired server certificate; warn about an open key, or one not yet valid.

    Returns a one-line description of the certificate for the start-up log.
    """
    with open(cert, "rb") as f:
        subject, sans, not_after, not_before = certificate_info(f.read())
    now = dt.datetime.now(dt.UTC)
    if not_after < now:
        raise ConfigError(
            f"--tls-cert {cert} expired on {not_after:%Y-%m-%d}: "
            "make new files with labd tls init DIR --force --host NAME"
        )
    if not_before > now:
        log.warning("--tls-cert %s is valid only from %s: is the clock right?", cert, not_before)
    with open(ca, "rb") as f:
        ca_after = certificate_info(f.read())[2]
    if ca_after < now:
        log.warning(
            "--tls-ca %s expired on %s: clients will be refused", ca, f"{ca_after:%Y-%m-%d}"
        )
    mode = os.stat(key).st_mode & 0o777
    if mode & 0o026:  # readable by all, or writable by more than its owner (0640 is fine)
        log.warning("--tls-key %s is open to other users (mode %o): chmod 600 it", key, mode)
    names = ", ".join(sans) or "no names"
    return f"{subject} for {names}, until {not_after:%Y-%m-%d}"


def _readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except IsADirectoryError:
        raise ConfigError(f"{flag} {path} is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {flag} {path}: {(exc.strerror or str(exc)).lower()}"
        ) from None


def _pem_certificates(flag: str, path: str) -> None:
    """A file with at least one PEM certificate, checked on its own (before the key)."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        raise ConfigError(f"{flag} {path} is not a PEM certificate ({_reason(exc)})") from None


def _reason(exc: ssl.SSLError) -> str:
    if exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    text = str(exc.args[-1] if exc.args else exc)
    return re.sub(r"^\[\w+\]\s*|\s*\(_ssl\.c:\d+\)$", "", text).lower()
