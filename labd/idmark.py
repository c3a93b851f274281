"""The set ids' high-water mark, kept apart from the history store (the experiments
have one of their own, ``STATE_DIR/last-experiment-id``, kept the same way).

Set ids are never reused, also when the history file is deleted, replaced or moved
aside as damaged: the highest id ever given is kept in a small file of its own
(``STATE_DIR/last-set-id``), replaced atomically (written, synced, renamed) before an id
is used. The next id is one above both the mark and the store's own highest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("labd.history")
FILENAME = "last-set-id"


class IdMark:
    """The highest id (of a set, or of an experiment) labd ever gave in this state
    directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = _read(path)

    def raise_to(self, value: int) -> None:
        """Keep ``value`` as given already (from a history file moved aside)."""
        if value > self.value:
            try:
                _write(self.path, value)
            except OSError as exc:
                log.warning("cannot write the set id mark %s: %s", self.path, exc)
            self.value = value

    def take(self, store_max: int) -> int:
        """The next id, recorded before it is returned (OSError if it cannot be)."""
        next_id = max(self.value, store_max) + 1
        _write(self.path, next_id)
        self.value = next_id
        return next_id


def _read(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    except OSError as exc:
        log.warning("cannot read the set id mark %s: %s", path, exc)
        return 0
    if not text.isdigit():
        log.warning("the set id mark %s holds %r, not a number: ignored", path, text[:20])
        return 0
    return int(text)


def _write(path: Path, value: int) -> None:
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{value}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
