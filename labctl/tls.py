"""The client side of mutual TLS: which files to use and the context built from them."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from labd.errors import UsageError, ssl_reason


@dataclass(frozen=True)
class TlsFiles:
    """The client's certificate and key, and the CA that signed the daemon's certificate."""

    cert: str
    key: str
    ca: str


def client_context(files: TlsFiles) -> ssl.SSLContext:
    """A context that verifies the daemon against the pinned CA, hostname included.

    Built by hand rather than with ``rpyc.ssl_connect``, which in rpyc 6.0.2 skips the
    hostname check unless told otherwise.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verify_mode CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=files.ca)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS CA {files.ca}: {ssl_reason(exc)}") from exc
    try:
        context.load_cert_chain(certfile=files.cert, keyfile=files.key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(
            f"cannot load the TLS certificate {files.cert} with key {files.key}: {ssl_reason(exc)}"
        ) from exc
    return context


# --- extended key usage, read from the DER certificate (no cryptography import here:
# --- it would cost a one-shot command more than the whole TLS handshake) --------------
_EKU = bytes.fromhex("551d25")  # 2.5.29.37 extKeyUsage
SERVER_AUTH = bytes.fromhex("2b06010505070301")  # 1.3.6.1.5.5.7.3.1 serverAuth
_OID, _SEQUENCE, _EXTENSIONS = 0x06, 0x30, 0xA3


class UnsuitableCertificate(OSError):
    """labd's certificate verified, but is not made for a server."""


def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """(tag, value, next position) of the DER element at ``pos``."""
    tag, size = data[pos], data[pos + 1]
    pos += 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + size > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos : pos + size], pos + size


def _elements(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        tag, value, pos = _tlv(data, pos)
        out.append((tag, value))
    return out


def extended_key_usages(der: bytes) -> frozenset[bytes] | None:
    """The DER-encoded OIDs of a certificate's extended key usage, or None without one."""
    _, cert, _ = _tlv(der, 0)
    _, tbs, _ = _tlv(cert, 0)
    for tag, value in _elements(tbs):
        if tag != _EXTENSIONS:
            continue
        _, extensions, _ = _tlv(value, 0)
        for _, extension in _elements(extensions):
            parts = _elements(extension)  # extnID, [critical], extnValue
            if parts and parts[0] == (_OID, _EKU):
                _, usages, _ = _tlv(parts[-1][1], 0)
                return frozenset(v for t, v in _elements(usages) if t == _OID)
    return None


def check_server_usage(der: bytes | None) -> None:
    """Refuse a daemon certificate not made for a server: it must name ``serverAuth``
    among its extended key usages (as ``labd tls init`` makes it); OpenSSL takes one
    without that extension as good for any purpose, a client's certificate too."""
    try:
        usages = extended_key_usages(der or b"")
    except (ValueError, IndexError):
        raise UnsuitableCertificate("its certificate cannot be read") from None
    if usages is None:
        raise UnsuitableCertificate("it has no extended key usage (serverAuth is needed)")
    if SERVER_AUTH not in usages:
        raise UnsuitableCertificate("it is not for a server (no serverAuth extended key usage)")
