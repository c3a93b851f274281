"""The background poller: the daemon's status, twice a second, on its own connection.

rpyc connections are not shared between threads, so the poller connects by itself (and
never starts a daemon: that is for the commands the user types). It fills the
:class:`~labctl.repl.cache.LiveCache`, wakes the UI through ``on_change``, says once when
labd goes away and once when it is back, and keeps retrying in between. It also reads
the user's group file (``spawn ... --on``) at each round, so group ids complete as set
ids do, whether labd answers or not.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labctl.client import Client, connect
from labctl.repl.cache import LiveCache
from labctl.target import Target
from labd.errors import ConnectError, LabError

Connector = Callable[[Target], Client]
GroupReader = Callable[[], list[dict[str, Any]]]


def _connect(target: Target) -> Client:
    return connect(target.address, target.tls, target.timeout)


def _read_groups() -> list[dict[str, Any]]:
    from labctl.groups import Groups

    return Groups().summaries()


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)  # looked up now: patched while a prompt shows


@dataclass(frozen=True)
class Pace:
    """How often to poll a daemon that answers, and to retry one that does not."""

    interval: float = 0.5
    retry: float = 1.0


class Poller:
    """A daemon thread that keeps the cache fresh; ``stop()`` ends it."""

    def __init__(
        self,
        target: Target,
        cache: LiveCache,
        *,
        pace: Pace = Pace(),
        connector: Connector = _connect,
        say: Callable[[str], None] = _say,
        groups: GroupReader = _read_groups,
    ) -> None:
        self.target = target
        self.cache = cache
        self.on_change: Callable[[], None] = lambda: None
        self._pace = pace
        self._connector = connector
        self._say = say
        self._read_groups = groups
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="labctl-poller", daemon=True)
        self._announced_loss = False

    def told_down(self) -> None:
        """The user was told labd does not answer: say so when it does."""
        self._announced_loss = True

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        client: Client | None = None
        while not self._stopping.is_set():
            if client is None:
                client = self._join()
            if client is not None:
                client = self._poll(client)
            self._groups()
            self._stopping.wait(self._pace.interval if client else self._pace.retry)
        if client is not None:
            client.close()

    def _join(self) -> Client | None:
        """A new connection with the mechanisms fetched, or None (the reason is cached)."""
        try:
            client = self._connector(self.target)
        except LabError as exc:
            self._down(exc.message)
            return None
        try:
            mechanisms = client.mechanisms()
        except LabError as exc:
            client.close()
            self._down(exc.message)
            return None
        self.cache.update(
            connected=True, mechanisms=tuple(mechanisms), problem="", expect_down=False
        )
        if self._announced_loss:
            self._announced_loss = False
            self._say(f"labctl: connected to labd at {self.target.address}")
        self.on_change()
        return client

    def _poll(self, client: Client) -> Client | None:
        """One status(); the client again, or None once the connection is gone."""
        try:
            sets = client.status()
        except ConnectError as exc:
            client.close()
            self._down(exc.message)
            return None
        except LabError:
            return client  # the daemon answered, with an error: try again next time
        self.cache.update(sets=tuple(sets), updated=time.monotonic())
        self.on_change()
        return client

    def _groups(self) -> None:
        """The user's groups, if their file changed (a bad file: none, the commands say why)."""
        try:
            found = tuple(self._read_groups())
        except (LabError, OSError):
            found = ()
        if found != self.cache.snapshot().groups:
            self.cache.update(groups=found)
            self.on_change()

    def _down(self, problem: str) -> None:
        """Note that labd does not answer; say so once per loss of a working connection."""
        if not self.cache.snapshot().connected:
            self.cache.update(problem=problem)
            return
        if self.cache.lost(problem).expect_down:
            self.on_change()  # asked for: the prompt turns red, nothing more is said
            return
        self._announced_loss = True
        self._say(
            f"labctl: lost labd at {self.target.address}; reconnecting when it is back "
            "(help and exit still work)"
        )
        self.on_change()
