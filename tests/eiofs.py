"""A disk that fails with a real EIO on demand: a FUSE passthrough filesystem (test support).

Run as ``python eiofs.py BACKING MOUNTPOINT SWITCH``: it mounts ``MOUNTPOINT`` (in the
foreground, until unmounted) and forwards every operation to the directory ``BACKING``.
While the file ``SWITCH`` exists, the operations it names (``write`` and/or ``read``,
``write`` if it is empty) fail with EIO: write, fsync, create, truncate and fallocate
for ``write``; read for ``read`` (what the kernel has cached of a file open before is
still served from its cache, as on a real disk; an open drops it). So the kernel hands
the program on top (SQLite, labd's printer logs) the same error a failing disk would,
from the system call itself.

:class:`EioDisk` mounts one for a test, switches it and unmounts it whatever happens
(also when the filesystem process hangs: the connection is aborted through fusectl).
Needs root (or /dev/fuse access), the ``mfusepy`` package and libfuse3 (``fuse3``).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WRITES = ("write", "fsync", "create", "truncate", "fallocate")
READS = ("read",)
_STAT_KEYS = (
    "st_mode",
    "st_ino",
    "st_dev",
    "st_nlink",
    "st_uid",
    "st_gid",
    "st_size",
    "st_blocks",
    "st_blksize",
)


# --- the filesystem (runs in its own process) ----------------------------------------------
def serve(backing: str, mountpoint: str, switch: str) -> None:
    import mfusepy

    fail = mfusepy.FuseOSError

    class Passthrough(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def _real(self, path: str) -> str:
            return os.path.join(backing, path.lstrip("/"))

        def _gate(self, op: str) -> None:
            """EIO if the switch names this operation's kind (read at every operation)."""
            try:
                words = Path(switch).read_text().split() or ["write"]
            except FileNotFoundError:
                return
            if any(op in (WRITES if w == "write" else READS) for w in words):
                raise fail(errno.EIO)

        # metadata
        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
            out: dict[str, Any] = {k: getattr(st, k) for k in _STAT_KEYS}
            out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
            return out

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._real(path), amode):
                raise fail(errno.EACCES)
            return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._real(path))]

        def statfs(self, path: str) -> dict[str, int]:
            sv = os.statvfs(self._real(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            keys += ("f_files", "f_flag", "f_frsize", "f_namemax")
            return {k: getattr(sv, k) for k in keys}

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._real(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._real(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._real(path), ns=times)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._real(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._real(path))
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._real(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._real(old), self._real(new))
            return 0

        # files
        def open(self, path: str, flags: int) -> int:
            return os.open(self._real(path), flags)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            self._gate("create")
            return os.open(self._real(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            self._gate("read")
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            self._gate("write")
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            self._gate("truncate")
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._real(path), length)
            return 0

        def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
            self._gate("fallocate")
            os.posix_fallocate(fh, offset, size)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            self._gate("fsync")
            (os.fdatasync if datasync else os.fsync)(fh)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

    mfusepy.FUSE(Passthrough(), mountpoint, foreground=True, fsname="eiofs")


# --- the handle a test holds ---------------------------------------------------------------
class EioDisk:
    """An EIO-on-demand filesystem mounted at ``path`` over ``backing`` (both made here)."""

    def __init__(self, root: Path) -> None:
        self.backing = root / "backing"
        self.path = root / "disk"
        self._switch = root / "eio"
        self.backing.mkdir(mode=0o700)
        self.path.mkdir(mode=0o700)
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(self.backing), str(self.path), str(self._switch)],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while not os.path.ismount(self.path):
            if self._proc.poll() is not None:
                raise RuntimeError(f"the FUSE filesystem ended (code {self._proc.returncode})")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"the FUSE filesystem was not mounted at {self.path} in 20 s")
            time.sleep(0.02)

    def fail(self, *kinds: str) -> None:
        """Fail these kinds of operations ("write", "read") with EIO from now on."""
        self._switch.write_text(" ".join(kinds or ("write",)))

    def heal(self) -> None:
        self._switch.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount (lazily if still busy, aborting the connection if the filesystem
        process hangs) and end the filesystem process."""
        self.heal()
        if os.path.ismount(self.path):
            subprocess.run(["umount", str(self.path)], capture_output=True, check=False)
        if os.path.ismount(self.path):  # still busy: detach it now, gone once let go
            subprocess.run(["umount", "-l", str(self.path)], check=False)
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._abort()
            self._proc.kill()
            self._proc.wait()

    def _abort(self) -> None:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == str(self.path):
                abort = Path(f"/sys/fs/fuse/connections/{fields[2].split(':')[1]}/abort")
                if abort.exists():
                    abort.write_text("1")
        subprocess.run(["umount", "-l", str(self.path)], check=False)


if __name__ == "__main__":
    serve(*sys.argv[1:4])
