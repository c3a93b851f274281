"""Where labd is and how to reach it, resolved once from options and environment."""

from __future__ import annotations

from dataclasses import dataclass

from labctl.tls import TlsFiles
from labd.errors import UsageError
from labd.protocol import Address, default_socket, tls_files

CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Target:
    """The daemon to talk to.

    ``autostart`` is true only for the default local socket, never for an address the
    user gave (``--connect``, ``LABCTL_CONNECT``), and not with ``--no-autostart``.
    """

    address: Address
    tls: TlsFiles | None = None
    autostart: bool = False
    timeout: float = CONNECT_TIMEOUT


def resolve_target(
    address: Address | None,
    tls_paths: tuple[str | None, str | None, str | None] = (None, None, None),
    *,
    no_autostart: bool = False,
) -> Target:
    """Check that the options fit together and say where to connect.

    ``tls_paths`` is (cert, key, ca): all three or none. TLS applies to TCP only, and a
    non-loopback TCP address needs it, since labd refuses plain TCP there.
    """
    tls = _tls_files(*tls_paths)
    chosen = address or Address(path=str(default_socket()))
    if tls is not None and chosen.is_unix:
        raise UsageError(f"TLS options apply to HOST:PORT addresses, not to {chosen}")
    if address is None:
        return Target(chosen, tls=None, autostart=not no_autostart)
    if tls is None and not address.is_loopback:
        raise UsageError(
            f"{address} is not a loopback address: remote control needs "
            "--tls-cert, --tls-key and --tls-ca (see: labd tls init)"
        )
    return Target(address, tls=tls, autostart=False)


def _tls_files(cert: str | None, key: str | None, ca: str | None) -> TlsFiles | None:
    files = tls_files(cert, key, ca)
    return None if files is None else TlsFiles(*files)
