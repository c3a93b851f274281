"""The state directory's guard: one labd per directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from labd.errors import ConfigError

log = logging.getLogger("labd.lab")


def lock_state_dir(state_dir: Path) -> int:
    """One labd per state directory: a second one would take the first one's running
    sets for leftovers of a dead daemon. The lock dies with the process."""
    import fcntl

    fd = os.open(state_dir / "labd.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"another labd (pid {holder}) uses the state directory {state_dir}: "
            "give each labd its own --state-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
