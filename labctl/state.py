"""What a command needs from its invocation: the target and one lazily made client.

This is ``ctx.obj`` of the click group. A one-shot ``labctl`` builds it from the global
options; the REPL builds one for its whole session (possibly with a client it already
holds) and passes it to every line it runs, so that commands never connect by themselves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from labctl.client import Client
from labctl.target import Target

Connector = Callable[[Target, bool], Client]


def _open_client(target: Target, allow_start: bool) -> Client:
    from labctl.autostart import open_client

    return open_client(target, allow_start=allow_start)


class State:
    """The target, the connection made on first use, and whether a REPL drives us."""

    def __init__(
        self,
        target: Target,
        *,
        client: Client | None = None,
        connector: Connector = _open_client,
        interactive: bool = False,
    ) -> None:
        self.target = target
        self.interactive = interactive
        self._client = client
        self._connector = connector
        #: set by ``shutdown``: the next connection that starts labd says so first
        self.shut_down = False
        #: called by ``shutdown`` before it asks (the REPL mutes its lost-labd line)
        self.on_shutdown: Callable[[], None] = lambda: None

    def client(self, *, autostart: bool = True) -> Client:
        """The connected client, connecting (again) if there is none or it was lost.

        ``autostart=False`` for commands that make no sense against a daemon started
        just for them (``shutdown``).
        """
        if self._client is None or self._client.closed:
            self.close()
            if self.shut_down and autostart and self.target.autostart:
                print("labctl: labd was shut down; starting a new one", file=sys.stderr)
            self._client = self._connector(self.target, autostart)
            self.shut_down = False
        return self._client

    @property
    def connected(self) -> bool:
        return self._client is not None and not self._client.closed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
