"""Keeping a live set's Redis keys alive, so that a dead set's keys vanish on their own.

Every key of a set's namespace expires ``key_ttl=`` seconds after it was last renewed.
While the set runs, a keeper thread in labd (one per Redis set) pushes every key's
expiry ahead every third of that, in one round trip (a pipeline of PEXPIRE) on a
connection of its own: the counters never see it, and a server that stops answering
holds up this set's keeper only, never labd's sampler or another set. When labd or
its host dies, its workers end with it, nothing renews the keys, and Redis removes them
``key_ttl`` seconds later. An orderly end stops the keeper and removes the keys at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from labd.mechanisms import redis_conn

log = logging.getLogger(__name__)

RENEWALS_PER_TTL = 3  # a key is renewed this many times within its expiry
MAX_WAIT_S = 2.0  # the longest a renewal may wait for the server


class KeyKeeper:
    """Renews a namespace's keys every ``ttl / RENEWALS_PER_TTL`` until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        conn_kwargs: Mapping[str, Any],
        namespace: redis_conn.Namespace,
        ttl_ms: int,
        name: str = "redis keeper",
    ) -> None:
        self.namespace = namespace
        self.ttl_ms = ttl_ms
        self.period = ttl_ms / 1000 / RENEWALS_PER_TTL
        # at most a period: a hung server never stacks renewals up, nor holds up a stop
        self._wait = min(MAX_WAIT_S, max(0.1, self.period))
        kwargs = {**conn_kwargs, "socket_timeout": self._wait}
        self._client = redis_conn.open_client(url, kwargs)
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.period):
                self._renew()
        finally:
            with contextlib.suppress(Exception):
                self._client.close()

    def _renew(self) -> None:
        try:
            self.namespace.renew(self._client, self.ttl_ms)
        except Exception as exc:  # the server went away: the set's workers say so
            if not self._failing:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("cannot renew the expiry of %s:*: %s", self.namespace.prefix, reason)
            self._failing = True
        else:
            self._failing = False

    def stop(self) -> None:
        """No more renewals (one in flight ends within the socket timeout)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(self._wait + 1.0)
