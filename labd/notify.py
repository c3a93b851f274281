"""A minimal sd_notify sender: one datagram to ``$NOTIFY_SOCKET`` (stdlib only)."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Talks to systemd when run as ``Type=notify``; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog = int(usec) / 2e6 if usec.isdigit() and mine else None
        if environ is None:  # children must not inherit the notify socket
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                os.environ.pop(key, None)

    def status(self, summary: str) -> None:
        self.send(f"STATUS={summary}")

    def send(self, message: str) -> bool:
        if not self.address:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto(message.encode(), addr)
            except OSError:
                return False
        return True
