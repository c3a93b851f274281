"""rpyc's ThreadedServer, subclassed where rpyc's internals need it: connection budgets
by stage and by source (:mod:`labd.server.admission`), a one-line refusal a client can
read, clients that leave before they are served end quietly, and each connection served
with the least work per call (:mod:`labd.server.serving`). This module and that one are
the ones that override rpyc's private methods: check them first when rpyc is upgraded."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
import time
from typing import Any

from rpyc.utils.authenticators import AuthenticationError
from rpyc.utils.server import ThreadedServer

from labd.protocol import REFUSAL_BUSY, refusal_line
from labd.server.admission import DEFAULT_LIMITS, Admission, ClientLimits, cut, source_of
from labd.server.serving import serve_connection

log = logging.getLogger("labd.server")
SEND_LINE = 1.0  # at most this long sending a refused client its line


class LabServer(ThreadedServer):
    """rpyc's ThreadedServer with labd's connection budgets.

    Between the authenticator and the service rpyc asks the socket for its peer's
    address; if the client has reset the connection by then (one that completes a TLS
    handshake and closes at once does), that fails with ENOTCONN and rpyc would log the
    error with a traceback. Such a client has simply left.
    """

    GONE = frozenset({errno.ENOTCONN, errno.ECONNRESET, errno.EPIPE, errno.EBADF})

    def __init__(
        self, *args: Any, limits: ClientLimits = DEFAULT_LIMITS, tls: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        #: on a TLS listener nothing can be said before the handshake: refuse by closing
        self.tls = tls
        self.admission = Admission(limits)
        self._count = threading.Lock()
        self._refusals = 0

    def _accept_method(self, sock: socket.socket) -> None:
        """Authenticate and serve the client in a thread of its own, unless its source
        or everyone has too many handshakes under way: then close it at once, so a
        flood costs no thread."""
        source = source_of(sock)
        why, evicted = self.admission.enter_pending(sock, source)
        if evicted is not None:
            cut(evicted)
            self._count_refusal(f"{source} has its share of handshakes under way: cut its oldest")
        if why is not None:
            if not self.tls:
                _send_line(sock, REFUSAL_BUSY, f"labd is at its connection limit: {why}", 0)
            self._refuse(sock, why)
            return
        try:
            super()._accept_method(sock)
        except BaseException:
            self.admission.leave_pending(sock)
            raise

    def _authenticate_and_serve_client(self, sock: socket.socket) -> None:
        """rpyc's own, with the budgets (its authenticator is always set here)."""
        source = source_of(sock)
        try:
            try:
                sock2, credentials = self.authenticator(sock)
            except AuthenticationError:
                return  # the authenticator said why in the log
            finally:
                self.admission.leave_pending(sock)
            why = self.admission.enter_served(source)
            if why is not None:
                line = f"labd is at its connection limit: {why}; try again later"
                _send_line(sock2, REFUSAL_BUSY, line, SEND_LINE)
                self._refuse(sock2, why)
                return
            try:
                self._serve_client(sock2, credentials)
            except Exception:
                log.exception("a client's connection ended abruptly")
            finally:
                self.admission.leave_served(source)
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
        self._count_refusal(why)

    def _count_refusal(self, why: str) -> None:
        with self._count:
            self._refusals += 1
            count = self._refusals
        if count & (count - 1) == 0:  # the 1st, 2nd, 4th, 8th ...
            log.warning("refused a client: %s; %d refused so far", why, count)

    def _serve_client(self, sock: socket.socket, credentials: Any) -> None:
        try:
            serve_connection(self.service, sock, self.protocol_config, credentials)
        except OSError as exc:
            if not self.active:  # close() closed the client's socket under its thread
                log.info("closed a client's connection: labd is stopping")
                return
            if exc.errno not in self.GONE:
                raise
            log.info("a client left before it was served (%s)", exc.strerror or exc)
        except (ValueError, EOFError, TypeError, KeyError, IndexError) as exc:
            # rpyc's decoder on bytes that are not its protocol: drop that client only
            log.warning("dropped a client that spoke no rpyc: %s", type(exc).__name__)


def _send_line(sock: socket.socket, kind: str, message: str, timeout: float) -> None:
    """Tell a refused client why in one line it can read (never an rpyc frame); with
    ``timeout`` 0, only what fits in the socket's buffer now."""
    with contextlib.suppress(OSError, ValueError):
        if not timeout:
            sock.send(refusal_line(kind, message), socket.MSG_DONTWAIT)
            return
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        sock.sendall(refusal_line(kind, message))
        if sock.family == socket.AF_UNIX:
            return
        # TCP: closing with the client's request unread would send a reset, which can
        # destroy the line on its way; so read until the client closes, or the deadline
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
