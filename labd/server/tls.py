"""TLS at run time: labd's server context and the checks of its files.

:func:`server_context` loads labd's side into an :class:`ssl.SSLContext` that demands a
client certificate signed by the CA, with a one-line :class:`ConfigError` for every way
the files can be wrong. Making the files is :mod:`labd.pki`. ``cryptography`` is
imported only where certificates are read, so importing this module costs no more than
:mod:`ssl`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from typing import Any

from labd.errors import ConfigError, ssl_reason

log = logging.getLogger("labd.tls")


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


def peer_subject(cert: dict[str, Any] | None, *, serial: bool = True) -> str:
    """``CN=ipclab client,O=ipclab`` from :meth:`ssl.SSLSocket.getpeercert`'s dict,
    followed by `` serial N`` unless ``serial`` is false."""
    if not cert:
        return "(no certificate)"
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    text = ",".join(reversed(parts)) or "(empty subject)"
    number = cert.get("serialNumber") if serial else None
    return f"{text} serial {number}" if number else text


def client_usage_problem(der: bytes | None) -> str | None:
    """Why a client's certificate (DER) is not for a client, or None if it is: it must
    name ``clientAuth`` among its extended key usages, as ``labd tls init`` makes it.
    (OpenSSL takes a certificate without that extension as good for any purpose.)"""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    if not der:
        return "no client certificate"
    try:
        cert = x509.load_der_x509_certificate(der)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "its certificate has no extended key usage (clientAuth is needed)"
    except ValueError as exc:
        return f"its certificate cannot be read: {exc}"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        return "its certificate is not for a client (no clientAuth extended key usage)"
    return None


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
        raise ConfigError(f"--tls-key {key} is not a PEM private key ({ssl_reason(exc)})") from None
    try:
        context.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"cannot load --tls-ca {ca}: {ssl_reason(exc)}") from None
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
        raise ConfigError(f"{flag} {path} is not a PEM certificate ({ssl_reason(exc)})") from None
