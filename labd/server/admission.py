"""Who gets a place: labd's connection budgets, by stage and by source.

A connection is first *pending* (accepted, being authenticated: a TLS handshake may
take a while) and then *served* (authenticated, one rpyc thread). Each stage has a budget
of its own, so peers that never finish a handshake take no place of served clients, and
each budget is also shared out by source (a local peer's uid, a TCP peer's address), so
one user or one host cannot take all of it:

* pending: at most ``max_pending`` in all, ``pending_per_source`` per source (beyond it,
  the source's oldest handshake is cut for its newest), each for at most
  ``handshake_deadline`` seconds (the TLS authenticator's timeout: Python's ssl module
  bounds the whole handshake by it, not each read, so trickling bytes gains nothing);
* served: at most ``max_clients`` in all, ``per_user`` per source.

Pure bookkeeping: :class:`labd.server.rpyc_server.LabServer` asks, and closes the socket.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter
from dataclasses import dataclass

from labd.protocol import MAX_CLIENTS

MIN_PENDING = 64  # handshakes at once, at least
PENDING_PER_SOURCE = 16  # handshakes at once from one uid or address
PER_USER = 64  # served at once to one uid or address (labd --max-clients-per-user)
HANDSHAKE_DEADLINE = 5.0  # seconds from accept to authenticated, in all
_UCRED = struct.Struct("iII")


@dataclass(frozen=True)
class ClientLimits:
    max_clients: int = MAX_CLIENTS
    per_user: int = PER_USER
    pending_per_source: int = PENDING_PER_SOURCE

    @property
    def max_pending(self) -> int:
        return max(self.max_clients, MIN_PENDING)

    @property
    def user_cap(self) -> int:
        return min(self.per_user, self.max_clients)


DEFAULT_LIMITS = ClientLimits()


def source_of(sock: socket.socket) -> str:
    """``uid 1000`` for a local peer, ``host 192.0.2.7`` for a TCP one."""
    try:
        if sock.family == socket.AF_UNIX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            return f"uid {_UCRED.unpack(raw)[1]}"
        return f"host {sock.getpeername()[0]}"
    except (OSError, ValueError, IndexError):
        return "(unknown source)"


class Admission:
    """The counts; thread-safe. Each ``enter_*`` that returns None must be matched by
    its ``leave_*``; a string is the refusal, in the words of the log."""

    def __init__(self, limits: ClientLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, str] = {}  # in the order they came
        self._live_by = Counter[str]()  # pending, not marked to be cut
        self._cut: set[socket.socket] = set()
        self._served_by = Counter[str]()
        self._served = 0

    def enter_pending(
        self, sock: socket.socket, source: str
    ) -> tuple[str | None, socket.socket | None]:
        """(refusal, None), or (None, a connection to cut): when ``source`` has its
        share of handshakes under way, its oldest one makes room for this one, so a
        peer's stuck connections cannot keep a quick handshake from its own host out."""
        lim = self.limits
        evicted = None
        with self._lock:
            if len(self._pending) >= lim.max_pending:
                return f"{lim.max_pending} handshakes are under way already", None
            if self._live_by[source] >= lim.pending_per_source:
                evicted = next(
                    s for s, src in self._pending.items() if src == source and s not in self._cut
                )
                self._mark_cut(evicted)
            self._pending[sock] = source
            self._live_by[source] += 1
        return None, evicted

    def leave_pending(self, sock: socket.socket) -> None:
        with self._lock:
            source = self._pending.pop(sock, None)
            if source is not None and sock not in self._cut:
                self._live_by[source] -= 1
            self._cut.discard(sock)
            if source is not None and self._live_by.get(source, 1) <= 0:
                del self._live_by[source]

    def _mark_cut(self, sock: socket.socket) -> None:
        self._cut.add(sock)
        self._live_by[self._pending[sock]] -= 1

    def enter_served(self, source: str) -> str | None:
        lim = self.limits
        with self._lock:
            if self._served >= lim.max_clients:
                return f"{lim.max_clients} clients are served already (--max-clients)"
            if self._served_by[source] >= lim.user_cap:
                return (
                    f"{lim.user_cap} clients of {source} are served already "
                    "(--max-clients-per-user)"
                )
            self._served += 1
            self._served_by[source] += 1
        return None

    def leave_served(self, source: str) -> None:
        with self._lock:
            self._served -= 1
            self._served_by[source] -= 1
            if not self._served_by[source]:
                del self._served_by[source]


def cut(sock: socket.socket) -> None:
    """End a connection another thread may be blocked on (its read fails at once)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
