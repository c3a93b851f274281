"""The test disk that fails with EIO (tests/eiofs.py) does what the fault tests rely on:
the kernel hands the error to the system call while it is switched on, and nothing is
refused once it is off."""

from __future__ import annotations

import errno
import os
import sqlite3

import pytest
from diskfaults import eio_fs

pytestmark = pytest.mark.daemon  # it runs a filesystem process


def test_writes_and_reads_fail_with_eio_while_switched_on() -> None:
    with eio_fs() as disk:
        path = disk.path / "f"
        path.write_bytes(b"kept")
        fd = os.open(path, os.O_RDWR)
        try:
            disk.fail("write")
            with pytest.raises(OSError) as err:
                os.pwrite(fd, b"x", 0)
            assert err.value.errno == errno.EIO
            with pytest.raises(OSError) as err:
                os.fsync(fd)
            assert err.value.errno == errno.EIO
            assert os.pread(fd, 4, 0) == b"kept", "reads go on while only writes fail"
            disk.fail("read")
            with pytest.raises(OSError) as err:  # opened anew: not from the page cache
                path.read_bytes()
            assert err.value.errno == errno.EIO
            disk.heal()
            assert os.pwrite(fd, b"K", 0) == 1 and os.pread(fd, 4, 0) == b"Kept"
        finally:
            os.close(fd)
        db = sqlite3.connect(disk.path / "db")
        try:
            db.execute("PRAGMA journal_mode=WAL")  # as labd's history
            db.execute("CREATE TABLE t (x)")
            disk.fail("write")
            with pytest.raises(sqlite3.OperationalError) as failed, db:
                db.execute("INSERT INTO t VALUES (1)")
            assert failed.value.sqlite_errorcode & 0xFF == sqlite3.SQLITE_IOERR
        finally:
            db.close()
        assert (disk.backing / "f").read_bytes() == b"Kept", "it passes through to the backing"
    assert not os.path.ismount(disk.path), "unmounted at the end"
