"""Preloaded by the forkserver: if the forkserver's loop ends with an exception (a fork
that fails with EAGAIN at the process limit ends it), say so in one line on labd's log,
not with CPython's traceback. labd starts a new forkserver for the next spawn."""

from __future__ import annotations

import errno
import sys
from types import TracebackType


def _one_line(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    why = " (the process limit, ulimit -u)" if getattr(exc, "errno", None) == errno.EAGAIN else ""
    print(f"ipclab forkserver: ended by {kind.__name__}: {exc}{why}", file=sys.stderr, flush=True)


sys.excepthook = _one_line
