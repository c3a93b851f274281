"""The per-user process limit (``RLIMIT_NPROC``, ``ulimit -u``): naming it when a spawn
hits it. A fork that fails with EAGAIN in labd (start methods fork and spawn) says so
itself; under the forkserver the fork fails in the forkserver, which dies, and labd only
sees its pipe close ("unexpected EOF"): then the count of this user's tasks tells."""

from __future__ import annotations

import errno
import os
import resource

from labd.errors import LimitError

#: a start failure with this few tasks left under the limit is blamed on it
NEAR = 16


def tasks_of(uid: int) -> int:
    """Processes and threads whose real uid is ``uid`` (what RLIMIT_NPROC counts)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid:
            total += int(fields.get("Threads", "1"))
    return total


def limit_error(exc: BaseException) -> LimitError | None:
    """A LimitError naming the process limit if it is why a worker could not start."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    eagain = isinstance(exc, OSError) and exc.errno == errno.EAGAIN
    if soft == resource.RLIM_INFINITY and not eagain:
        return None
    uid = os.getuid()
    count = tasks_of(uid)
    if not eagain and count < soft - NEAR:
        return None
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    return LimitError(
        f"the process limit is reached (ulimit -u {limit}; uid {uid} runs {count} "
        "processes and threads): stop some sets (labctl stop) or raise the limit"
    )
