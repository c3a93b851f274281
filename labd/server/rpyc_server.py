"""rpyc's ThreadedServer, subclassed where rpyc's internals need it: two client counts
(served, and still authenticating) so a flood costs no thread, and clients that leave
before they are served end quietly. This is the one module that overrides rpyc's
private methods: check it first when rpyc is upgraded."""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from typing import Any

from rpyc.utils.authenticators import AuthenticationError
from rpyc.utils.server import ThreadedServer

from labd.protocol import MAX_CLIENTS

log = logging.getLogger("labd.server")
MIN_PENDING = 64  # clients being authenticated at once, at least (see LabServer)


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
