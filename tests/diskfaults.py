"""Real disk faults for tests: a small tmpfs a test fills (ENOSPC), and a FUSE
filesystem that fails with EIO on demand (:mod:`eiofs`). Both are mounted for one test
and unmounted after it whatever happened; conftest.py offers them as the fixtures
``small_disk`` and ``disk_fault`` (each fault in turn, by parameter).

Request them before ``labd_factory``, so that labd is stopped before the unmount.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eiofs import EioDisk
from helpers import short_dir


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"mounting {what} needs root")


@contextmanager
def tmpfs(size: str = "8m") -> Iterator[Path]:
    """A tmpfs of ``size``, mounted on a new private directory, unmounted after."""
    _need_root("a tmpfs")
    where = short_dir() / "disk"
    where.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)


@contextmanager
def eio_fs() -> Iterator[EioDisk]:
    """A FUSE passthrough filesystem that fails with EIO while switched on."""
    _need_root("a FUSE filesystem")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("no /dev/fuse: this kernel or container offers no FUSE")
    disk = EioDisk(short_dir())
    try:
        yield disk
    finally:
        disk.close()


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses (ENOSPC); the file is returned."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


@dataclass
class DiskFault:
    """A disk that fails on demand: ``kind`` is how labd must name the fault."""

    kind: str  # "disk full" or "I/O error"
    path: Path  # where the test puts labd's state directory
    eio: EioDisk | None = None
    _filler: list[Path] = field(default_factory=list)

    def on(self) -> None:
        if self.eio is not None:
            self.eio.fail("write")
        else:
            self._filler.append(fill(self.path))

    def off(self) -> None:
        if self.eio is not None:
            self.eio.heal()
        while self._filler:
            os.unlink(self._filler.pop())


@contextmanager
def disk_fault_of(kind: str) -> Iterator[DiskFault]:
    if kind == "disk full":
        with tmpfs() as where:
            yield DiskFault(kind, where)
    else:
        with eio_fs() as disk:
            yield DiskFault(kind, disk.path, eio=disk)
