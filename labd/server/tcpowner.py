"""Which local user holds the other end of a loopback TCP connection.

Plain TCP (no TLS) is only for loopback, where any local user can connect; there is no
``SO_PEERCRED`` for it, but the kernel lists every TCP socket of this network namespace
with its owner's uid in ``/proc/net/tcp`` and ``/proc/net/tcp6``: the peer's socket is
the one whose local address is our peer's and whose remote address is ours. Its uid
then counts as on the unix socket (owner of its sets, admin or not).
"""

from __future__ import annotations

import ipaddress
import socket
import sys

_TABLES = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}
_ESTABLISHED = "01"


def _hex_address(host: str, port: int) -> str:
    """An address as /proc/net/tcp writes it: the raw bytes in host order, per 32-bit
    word, in hex; then the port in hex."""
    raw = ipaddress.ip_address(host.split("%")[0]).packed
    words = [raw[i : i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [w[::-1] for w in words]
    return f"{b''.join(words).hex().upper()}:{port:04X}"


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the peer's end of loopback TCP connection ``sock``, or None."""
    try:
        table = _TABLES[sock.family]
        ours = sock.getsockname()
        theirs = sock.getpeername()
    except (KeyError, OSError):
        return None
    want_local = _hex_address(theirs[0], theirs[1])
    want_remote = _hex_address(ours[0], ours[1])
    try:
        with open(table) as f:
            next(f, None)  # the header
            for line in f:
                fields = line.split()
                if (
                    len(fields) > 7
                    and fields[1] == want_local
                    and fields[2] == want_remote
                    and fields[3] == _ESTABLISHED
                ):
                    return int(fields[7])
    except (OSError, ValueError):
        return None
    return None
