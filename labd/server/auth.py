"""Authenticators: who may talk to labd, decided before rpyc reads a byte.

On the unix socket, the peer's credentials (``SO_PEERCRED``, ``SO_PEERGROUPS``) against
labd's :class:`~labd.server.access.SocketAccess`; on TCP, mutual TLS with a handshake
deadline, or (plain TCP) the loopback rule.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import socket
import ssl
import struct
import time
from typing import Any

from rpyc.utils.authenticators import AuthenticationError

from labd.errors import ssl_reason
from labd.protocol import REFUSAL_DENIED, refusal_line
from labd.server.access import PRIVATE, SocketAccess
from labd.server.admission import HANDSHAKE_DEADLINE
from labd.server.tcpowner import peer_uid
from labd.server.tls import client_usage_problem, peer_subject

log = logging.getLogger("labd.server")
HANDSHAKE_TIMEOUT = HANDSHAKE_DEADLINE  # the whole handshake: ssl bounds it in all
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux's number; Python 3.11 lacks it
_UCRED = struct.Struct("iII")  # struct ucred: pid_t pid; uid_t uid; gid_t gid
LINGER = 1.0  # at most this long reading a refused client's last bytes


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
        groups = _peer_groups(sock)
        if uid not in self.uids and not self.gids & {gid, *groups}:
            log.warning("refused local peer pid %d uid %d gid %d", pid, uid, gid)
            raise AuthenticationError(f"uid {uid} is not allowed")
        return sock, {"pid": pid, "uid": uid, "gid": gid, "groups": groups}


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
    """Plain TCP is only for this host: set TCP_NODELAY, and find the local user at the
    other end (:mod:`labd.server.tcpowner`), whom the unix socket would have known."""

    def __call__(self, sock: socket.socket) -> tuple[socket.socket, Any]:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        uid = peer_uid(sock)
        if uid is None:
            return sock, {"owner": f"(unknown TCP client {_peer(sock)})"}
        try:
            entry = pwd.getpwuid(uid)
            groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        except (KeyError, OSError):
            return sock, {"uid": uid, "groups": ()}
        return sock, {"uid": uid, "gid": entry.pw_gid, "groups": groups}


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
            subject = peer_subject(tls.getpeercert())
            problem = client_usage_problem(tls.getpeercert(binary_form=True))
        except (OSError, ValueError) as exc:  # SSLError and TimeoutError are OSErrors
            (tls or raw).close()  # wrap_socket takes raw over, and closes it if it fails
            why = _handshake_failure(exc, self.timeout)
            log.warning("refused TLS client %s: %s", peer, why)
            if isinstance(exc, ssl.SSLError):
                _drain(sock)
            raise AuthenticationError(f"{peer}: {why}") from None
        if problem is not None:
            log.warning(
                "refused TLS client %s (%s): certificate not accepted: %s", peer, subject, problem
            )
            _deny(
                tls,
                f"labd does not accept this certificate: {problem} (make one with: labd tls init)",
            )
            raise AuthenticationError(f"{peer}: {problem}")
        tls.settimeout(None)
        log.info("TLS client %s: %s", peer, subject)
        owner = peer_subject(tls.getpeercert(), serial=False)
        return tls, {"peer": peer, "subject": subject, "owner": owner, "tls": True}


def _deny(tls: ssl.SSLSocket, message: str) -> None:
    """Tell a client labd will not serve why (a refusal line, over its TLS session)."""
    with contextlib.suppress(OSError, ValueError):
        tls.settimeout(LINGER)
        tls.sendall(refusal_line(REFUSAL_DENIED, message))
        deadline = time.monotonic() + LINGER
        while (left := deadline - time.monotonic()) > 0:  # until it has read it and left
            tls.settimeout(left)
            if not tls.recv(65536):
                break
    with contextlib.suppress(OSError):
        tls.close()


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
        reason = ssl_reason(exc)
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
