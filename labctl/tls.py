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
