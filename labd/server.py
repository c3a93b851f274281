"""Listening: a unix socket (0600, in a private directory) and optional loopback TCP.

Every connection is authenticated before rpyc reads a byte: on the unix socket by the
peer's credentials (``SO_PEERCRED``), on TCP by the loopback rule (TLS comes with the
remote-control work). Each connection is served by its own thread (``ThreadedServer``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from rpyc.utils.authenticators import AuthenticationError
from rpyc.utils.helpers import classpartial
from rpyc.utils.server import ThreadedServer

from labd.errors import ConfigError
from labd.lab import Lab
from labd.protocol import Address
from labd.service import PROTOCOL_CONFIG, LabService

log = logging.getLogger("labd.server")
HANDSHAKE_TIMEOUT = 5.0


class PeerCredAuthenticator:
    """Admit local peers whose uid is ours, root's, or allowed; gids likewise."""

    def __init__(self, uids: Iterable[int] = (), gids: Iterable[int] = ()) -> None:
        self.uids = {os.getuid(), 0, *uids}
        self.gids = set(gids)

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        if uid not in self.uids and gid not in self.gids:
            log.warning("refused local peer pid %d uid %d gid %d", pid, uid, gid)
            raise AuthenticationError(f"uid {uid} is not allowed")
        return sock, {"pid": pid, "uid": uid, "gid": gid}


class LoopbackAuthenticator:
    """Plain TCP is only for this host: set TCP_NODELAY, bound the handshake."""

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, None


def claim_socket_path(path: Path) -> None:
    """Make the socket's directory private and clear a stale socket left by a dead labd."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
    uids: Iterable[int] = (),
    gids: Iterable[int] = (),
) -> Listener:
    service = classpartial(LabService, lab, on_shutdown)
    quiet = logging.getLogger("labd.rpyc")
    quiet.setLevel(logging.WARNING)
    if address.path:
        path = Path(address.path)
        claim_socket_path(path)
        old = os.umask(0o177)
        try:
            server = ThreadedServer(
                service,
                socket_path=str(path),
                protocol_config=PROTOCOL_CONFIG,
                authenticator=PeerCredAuthenticator(uids, gids),
                logger=quiet,
            )
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        return Listener(server, address)
    if not address.is_loopback:
        raise ConfigError(
            f"refusing to listen on {address} without TLS: give --tls-cert, "
            "--tls-key and --tls-ca, or listen on 127.0.0.1"
        )
    log.warning("listening on %s without TLS: any local user can connect", address)
    try:
        server = ThreadedServer(
            service,
            hostname=address.host,
            port=address.port,
            ipv6=":" in (address.host or ""),
            protocol_config=PROTOCOL_CONFIG,
            authenticator=LoopbackAuthenticator(),
            logger=quiet,
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return Listener(server, address)
