"""The state directory: made private if it is not there, and one labd per directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from labd.errors import ConfigError

log = logging.getLogger("labd.lab")


def make_state_dir(state_dir: Path) -> None:
    """The state directory and its ``logs``, mode 0700; a one-line ConfigError if they
    cannot be made (a file in the way, no permission, a read-only file system)."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (state_dir / "logs").mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        raise ConfigError(
            f"cannot make the state directory {state_dir}: {why} (give another --state-dir)"
        ) from None


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
