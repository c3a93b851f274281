"""An example third-party ipclab mechanism: a counter in ``multiprocessing.shared_memory``."""

from __future__ import annotations

from ipclab_shm.mechanism import SharedMemoryCounter

__all__ = ["SharedMemoryCounter"]
