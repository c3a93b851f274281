"""Imported last by the forkserver's preload: collect, then freeze what the forkserver
holds (``gc.freeze``), so that no worker's garbage collector walks (and so copies, page
by page) the modules every worker shares. A worker then costs less memory of its own
and less CPU to start. See docs/operating.md, "Starting many processes"."""

from __future__ import annotations

import gc

gc.collect()
gc.freeze()
