"""Listening: a unix socket (0600, in a private directory) and optional TCP.

Every connection is authenticated before rpyc reads a byte (see
:mod:`labd.server.auth`): on the unix socket by the peer's credentials; on TCP by mutual
TLS when labd has TLS files (any address), else by the loopback rule (plain TCP only on
a loopback address). Each connection is served by its own thread
(:class:`labd.server.rpyc_server.LabServer`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rpyc.utils.helpers import classpartial
from rpyc.utils.server import ThreadedServer

from labd.errors import ConfigError, UsageError
from labd.lab import Lab
from labd.protocol import Address, tls_files
from labd.server.access import PRIVATE, SocketAccess
from labd.server.admission import DEFAULT_LIMITS, ClientLimits
from labd.server.auth import LoopbackAuthenticator, PeerCredAuthenticator, TlsAuthenticator
from labd.server.rpyc_server import LabServer
from labd.server.service import PROTOCOL_CONFIG, LabService

log = logging.getLogger("labd.server")


def plain_tcp_refused(address: Address) -> ConfigError:
    """The one-line error for a non-loopback address without TLS files."""
    return ConfigError(
        f"refusing to listen on {address} without TLS: give --tls-cert, --tls-key and "
        "--tls-ca (make them with: labd tls init DIR --host NAME), or listen on 127.0.0.1"
    )


def load_tls(
    cert: str | None, key: str | None, ca: str | None, addresses: Iterable[Address]
) -> ssl.SSLContext | None:
    """labd's TLS context from its three options (None if none is given).

    Checks before anything starts: the options all or none, TCP addresses without TLS
    only on loopback, files readable, valid, matching, and the certificate not expired.
    """
    try:
        files = tls_files(cert, key, ca)
    except UsageError as exc:
        raise ConfigError(exc.message) from None  # labd's own options: exit code 2
    tcp = [a for a in addresses if not a.is_unix]
    if files is None:
        for address in tcp:
            if not address.is_loopback:
                raise plain_tcp_refused(address)
        return None
    cert, key, ca = files
    if not tcp:
        raise ConfigError(
            "--tls-cert, --tls-key and --tls-ca secure TCP: give --listen HOST:PORT too "
            "(e.g. --listen 0.0.0.0:18861)"
        )
    from labd.server.tls import check_server_files, server_context

    context = server_context(cert, key, ca)
    log.info(
        "TLS certificate %s; clients need one signed by %s", check_server_files(cert, key, ca), ca
    )
    return context


def claim_socket_path(path: Path, access: SocketAccess = PRIVATE) -> None:
    """Make the socket's directory ours and clear a stale socket left by a dead labd;
    then (only then: a second labd that fails must not touch the first one's) open the
    directory to ``access`` just enough to reach the socket."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.parent.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"{path.parent} is not a directory of ours that only we can write: "
            "remove it or choose --socket"
        )
    if path.is_symlink() or (path.exists() and not stat.S_ISSOCK(path.lstat().st_mode)):
        raise ConfigError(f"{path} exists and is not a socket: remove it or choose --socket")
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: stale
            log.info("removed stale socket %s", path)
        else:
            raise ConfigError(f"labd is already running at unix:{path} (stop it: labctl shutdown)")
        finally:
            probe.close()
    if not access.private:
        _check_own_directory(path)
        access.open_directory(path.parent)


def _check_own_directory(path: Path) -> None:
    """--allow-* change the directory's mode, group and ACL: only labd's own directory
    (nothing in it but labd's socket and Manager directories) may be changed; and warn
    when a directory above it keeps others out anyway."""
    foreign = [
        e.name for e in os.scandir(path.parent)
        if e.name != path.name and not e.name.startswith("manager-")
    ]  # fmt: skip
    if foreign:
        raise ConfigError(
            f"--allow-uid/--allow-group would change the permissions of {path.parent}, "
            f"which holds other files ({foreign[0]}, ...): give labd a directory of its own "
            f"(--socket DIR/{path.name})"
        )
    for parent in path.parent.parents:
        if not os.stat(parent).st_mode & 0o001:
            log.warning(
                "%s lets no other user through (mode %o): those --allow-uid/--allow-group "
                "admit cannot reach the socket below it",
                parent,
                stat.S_IMODE(os.stat(parent).st_mode),
            )
            break


class Listener:
    """One ThreadedServer serving the Lab on one address, in its own thread."""

    def __init__(self, server: ThreadedServer, address: Address) -> None:
        self.server = server
        self.address = address
        self._inode: int | None = None
        if address.path:
            self._inode = os.stat(address.path).st_ino
        self._thread = threading.Thread(target=server.start, name=f"listen {address}", daemon=True)

    def start(self) -> None:
        """Listen now (so READY=1 means connectable), then accept in a thread."""
        self.server._listen()
        self._thread.start()

    def stop_accepting(self) -> None:
        """Refuse new connections; those being served finish their call."""
        self.server.active = False
        with contextlib.suppress(OSError):
            self.server.listener.close()
        self._unlink()

    def close(self, grace: float = 1.0) -> None:
        """Close: give clients ``grace`` seconds to take their last reply and leave."""
        self.stop_accepting()
        deadline = time.monotonic() + grace
        while self.server.clients and time.monotonic() < deadline:
            time.sleep(0.02)
        self.server.close()

    def _unlink(self) -> None:
        path = self.address.path
        if path and self._inode is not None:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == self._inode:
                    os.unlink(path)


def listen(
    address: Address,
    lab: Lab,
    on_shutdown: Callable[[], None],
    access: SocketAccess = PRIVATE,
    tls: ssl.SSLContext | None = None,
    limits: ClientLimits = DEFAULT_LIMITS,
) -> Listener:
    """A listener on ``address``; TCP is mutual TLS with ``tls``, else loopback only."""
    service = classpartial(LabService, lab, on_shutdown)
    quiet = logging.getLogger("labd.rpyc")
    quiet.setLevel(logging.WARNING)
    if address.path:
        path = Path(address.path)
        claim_socket_path(path, access)
        old = os.umask(0o177)
        try:
            server = LabServer(
                service,
                socket_path=str(path),
                protocol_config=PROTOCOL_CONFIG,
                authenticator=PeerCredAuthenticator(access),
                logger=quiet,
                limits=limits,
            )
        finally:
            os.umask(old)
        access.open_socket(path)
        return Listener(server, address)
    authenticator: TlsAuthenticator | LoopbackAuthenticator
    if tls is not None:
        authenticator = TlsAuthenticator(tls)
    elif not address.is_loopback:
        raise plain_tcp_refused(address)
    else:
        log.warning("listening on %s without TLS: any local user can connect", address)
        authenticator = LoopbackAuthenticator()
    try:
        server = LabServer(
            service,
            hostname=address.host,
            port=address.port,
            ipv6=":" in (address.host or ""),
            protocol_config=PROTOCOL_CONFIG,
            authenticator=authenticator,
            logger=quiet,
            limits=limits,
            tls=tls is not None,
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return Listener(server, address)
