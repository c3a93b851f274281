"""Listening: a unix socket (0600, in a private directory) and optional TCP.

Every connection is authenticated before rpyc reads a byte: on the unix socket by the
peer's credentials (``SO_PEERCRED``); on TCP by mutual TLS when labd has TLS files
(any address), else by the loopback rule (plain TCP only on a loopback address). Each
connection is served by its own thread (``ThreadedServer``), so a client that connects
and stalls holds only its own thread, and only for the handshake timeout.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
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

from labd.access import PRIVATE, SocketAccess
from labd.errors import ConfigError
from labd.lab import Lab
from labd.protocol import MAX_CLIENTS, Address
from labd.service import PROTOCOL_CONFIG, LabService
from labd.tls import peer_subject

log = logging.getLogger("labd.server")
HANDSHAKE_TIMEOUT = 5.0
MIN_PENDING = 64  # clients being authenticated at once, at least (see LabServer)
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux's number; Python 3.11 lacks it
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
LINGER = 1.0  # at most this long reading a refused client's last bytes


class LabServer(ThreadedServer):
    """rpyc's ThreadedServer, at ease with a client that leaves before it is served.

    Between the authenticator and the service rpyc asks the socket for its peer's
    address; if the client has reset the connection by then (one that completes a TLS
    handshake and closes at once does), that fails with ENOTCONN and rpyc would log the
    error with a traceback. Such a client has simply left.
    """

    GONE = frozenset({errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE, errno.EBADF})

    def __init__(self, *args: Any, max_clients: int = MAX_CLIENTS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: clients served at once (authenticated); and clients not authenticated yet
        #: (a TLS handshake may take HANDSHAKE_TIMEOUT): counted apart, so peers without
        #: a certificate cannot take the places of those with one
        self.max_clients = max_clients
        self.max_pending = max(max_clients, MIN_PENDING)
        self._served = threading.BoundedSemaphore(max_clients)
        self._pending = threading.BoundedSemaphore(self.max_pending)
        self._count = threading.Lock()
        self._refusals = 0

    def _accept_method(self, sock: socket.socket) -> None:
        """Authenticate and serve the client in a thread of its own, unless too many
        are being authenticated: then close it at once, so a flood costs no thread."""
        if not self._pending.acquire(blocking=False):
            self._refuse(sock, f"{self.max_pending} clients are being authenticated already")
            return
        super()._accept_method(sock)

    def _authenticate_and_serve_client(self, sock: socket.socket) -> None:
        """rpyc's own, with the two counts (its authenticator is always set here)."""
        try:
            try:
                sock2, credentials = self.authenticator(sock)
            except AuthenticationError:
                return  # the authenticator said why in the log
            finally:
                self._pending.release()
            if not self._served.acquire(blocking=False):
                self._refuse(sock, f"{self.max_clients} clients are served already")
                return
            try:
                self._serve_client(sock2, credentials)
            except Exception:
                log.exception("a client's connection ended abruptly")
            finally:
                self._served.release()
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
            self.clients.discard(sock)

    def _refuse(self, sock: socket.socket, why: str) -> None:
        self.clients.discard(sock)
        with contextlib.suppress(OSError):
            sock.close()
        with self._count:
            self._refusals += 1
            count = self._refusals
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th ...
            log.warning(
                "refused a client: %s, the limit (--max-clients); %d refused so far", why, count
            )

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        try:
            super()._serve_client(sock, credentials)
        except OSError as exc:
            if exc.errno not in self.GONE:
                raise
            log.info("a client left before it was served (%s)", exc.strerror or exc)
        except (ValueError, EOFError, TypeError, KeyError, IndexError) as exc:
            # rpyc's decoder on bytes that are not its protocol: drop that client only
            log.warning("dropped a client that spoke no rpyc: %s", type(exc).__name__)


class PeerCredAuthenticator:
    """Admit local peers whose uid is ours, root's, or allowed, or who are in an allowed
    group (their primary group or a supplementary one, as the kernel saw them at
    ``connect``: ``SO_PEERCRED`` and ``SO_PEERGROUPS``)."""

    def __init__(self, access: SocketAccess = PRIVATE) -> None:
        self.uids = {os.getuid(), 0, *access.uids}
        self.gids = set(access.gids)

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(creds)
        if uid not in self.uids and not self.gids & {gid, *_peer_groups(sock)}:
            log.warning("refused local peer pid %d uid %d gid %d", pid, uid, gid)
            raise AuthenticationError(f"uid {uid} is not allowed")
        return sock, {"pid": pid, "uid": uid, "gid": gid}


def _peer_groups(sock: socket.socket) -> tuple[int, ...]:
    """The peer's supplementary groups (Linux >= 4.13), or () if unknown. Python's
    getsockopt reads at most 1024 bytes (256 groups): more are read through libc."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            return ()
        return _peer_groups_libc(sock.fileno())
    return struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4])


def _peer_groups_libc(fd: int, most: int = 65536) -> tuple[int, ...]:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_uint32 * most)()
    size = ctypes.c_uint32(ctypes.sizeof(buf))
    if libc.getsockopt(fd, socket.SOL_SOCKET, SO_PEERGROUPS, buf, ctypes.byref(size)) != 0:
        log.warning("cannot read a peer's groups: %s", os.strerror(ctypes.get_errno()))
        return ()
    return tuple(buf[: size.value // 4])


class LoopbackAuthenticator:
    """Plain TCP is only for this host: set TCP_NODELAY, bound the handshake."""

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, None


class TlsAuthenticator:
    """Mutual TLS: admit only clients whose certificate the context's CA signed.

    The handshake runs here, with a timeout, before rpyc reads anything; a client with
    no certificate, one from another CA, or one that never speaks is dropped with an
    :class:`AuthenticationError` (rpyc then closes the socket) and a line in the log.

    rpyc keeps the accepted socket in its client list and shuts it down when the server
    closes; wrapping it would detach it, so the TLS layer wraps a duplicate descriptor
    of the same connection and rpyc's shutdown still reaches it.
    """

    def __init__(self, context: ssl.SSLContext, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.context = context
        self.timeout = timeout

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        peer = _peer(sock)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw = sock.dup()
        except OSError as exc:
            raise AuthenticationError(f"{peer}: {exc}") from None
        tls: ssl.SSLSocket | None = None
        try:
            raw.settimeout(self.timeout)
            tls = self.context.wrap_socket(raw, server_side=True)  # handshakes now
            tls.settimeout(None)
            subject = peer_subject(tls.getpeercert())
        except (OSError, ValueError) as exc:  # SSLError and TimeoutError are OSErrors
            (tls or raw).close()  # wrap_socket takes raw over, and closes it if it fails
            why = _handshake_failure(exc, self.timeout)
            log.warning("refused TLS client %s: %s", peer, why)
            if isinstance(exc, ssl.SSLError):
                _drain(sock)
            raise AuthenticationError(f"{peer}: {why}") from None
        log.info("TLS client %s: %s", peer, subject)
        return tls, {"peer": peer, "subject": subject}


def _drain(sock: socket.socket, timeout: float = LINGER) -> None:
    """Close a refused connection gently, so the client reads the alert saying why.

    In TLS 1.3 the client may already have sent its first request when the refusal
    comes; closing with that unread would make the kernel answer with a reset, which
    can destroy the alert on its way. So: end our side, then read and discard until the
    client closes, for at most ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break


def _peer(sock: socket.socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return "(unknown peer)"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _handshake_failure(exc: BaseException, timeout: float) -> str:
    """One line on why a TLS handshake failed, in the words of the log."""
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake within {timeout:g} s"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not accepted: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc.strerror or exc).lower().replace("_", " ")
        hints = {
            "peer did not return a certificate": "no client certificate",
            "http request": "plain HTTP, not TLS",
            "wrong version number": "not TLS",
            "unexpected eof while reading": "closed during the handshake",
        }
        if reason in hints:
            return hints[reason]
        if "alert" in reason:  # the client's word: it did not accept labd's certificate
            return f"the client ended the handshake ({reason}): does it trust labd's CA?"
        return reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


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
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    missing = [flag for flag, value in given.items() if not value]
    tcp = [a for a in addresses if not a.is_unix]
    if len(missing) == len(given):
        for address in tcp:
            if not address.is_loopback:
                raise plain_tcp_refused(address)
        return None
    if missing:
        raise ConfigError(
            f"--tls-cert, --tls-key and --tls-ca go together: missing {', '.join(missing)}"
        )
    if not tcp:
        raise ConfigError(
            "--tls-cert, --tls-key and --tls-ca secure TCP: give --listen HOST:PORT too "
            "(e.g. --listen 0.0.0.0:18861)"
        )
    assert cert and key and ca
    from labd.tls import check_server_files, server_context

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
    max_clients: int = MAX_CLIENTS,
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
                max_clients=max_clients,
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
            max_clients=max_clients,
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return Listener(server, address)
