"""The daemon side every Redis mechanism shares: check, connect, claim, release.

A subclass names its data keys (``keys``) and writes the worker loops; this base checks
the parameters and reaches the server before the set exists (an unreachable server or
a wrong password is refused at spawn, with nothing started), claims the set's key
namespace at setup, keeps its keys' expiry renewed while the set runs (see
:mod:`redis_keeper`), and at teardown leaves it, removing every key if it is the last.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from labd.mechanisms import redis_conn
from labd.mechanisms.base import Mechanism, SetupEnv
from labd.mechanisms.redis_keeper import KeyKeeper
from labd.worker.contexts import CounterContext, PrinterContext


class RedisMechanism(Mechanism):
    """Base of the Redis mechanisms (not registered itself)."""

    #: the data keys of a set, under its namespace (e.g. "value" -> NS:value)
    keys: ClassVar[tuple[str, ...]] = ()
    #: how many of ``keys`` (the first) are counters made 0 at setup, with their expiry
    zeroed: ClassVar[int] = 0
    forkserver_preload = False  # redis-py would make every set's forks dearer

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.client: Any = None
        self.namespace: redis_conn.Namespace | None = None
        self.keeper: KeyKeeper | None = None
        self.group = redis_conn.parse_group(str(self.values.get("group") or ""))
        self._figures: dict[str, Any] = {}
        self._conn_kwargs: dict[str, Any] = {}
        self._printers = 0  # the set's printers (known at setup)

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> None:
        redis_conn.check_values(values)
        client = redis_conn.connect_checked(values)
        try:
            redis_conn.check_version(client, values)
        finally:
            client.close()

    def setup(self, env: SetupEnv) -> None:
        self._printers = env.printers
        values = self.values
        self._conn_kwargs = redis_conn.connect_kwargs(values, redis_conn.read_password(values))
        self.client = redis_conn.connect_checked(values)
        prefix = str(values.get("namespace") or "") or redis_conn.default_namespace(
            env.set_id, self.group
        )
        ns = redis_conn.Namespace(prefix, self.keys, self.zeroed)
        ttl = redis_conn.ttl_ms(values)
        if self.group is not None:
            ns.claim(self.client, f"group:{self.group.gid}:{self.name}", True, ttl)
        else:
            ns.claim(self.client, f"set:{env.set_id}", False, ttl)
        self.namespace = ns
        url = redis_conn.where(values)
        self.keeper = KeyKeeper(url, self._conn_kwargs, ns, ttl, f"redis keeper {env.set_id}")
        self._figures = {"namespace": prefix}

    def worker_args(self) -> tuple[Any, ...]:
        """What each worker gets: the url, the login (kept out of parameters), and what
        the worker loops use (here the data keys by name)."""
        assert self.namespace is not None
        return (redis_conn.where(self.values), dict(self._conn_kwargs), dict(self.namespace.data))

    def counter_args(self, index: int) -> tuple[Any, ...]:
        return self.worker_args()

    def printer_args(self, index: int) -> tuple[Any, ...]:
        return self.worker_args()

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        url, kwargs, keys = args
        with _connected("counter", ctx.index, url, kwargs) as client:
            cls.run_counter(ctx, client, keys)

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        url, kwargs, keys = args
        with _connected("printer", ctx.index, url, kwargs) as client:
            cls.run_printer(ctx, client, keys)

    @classmethod
    def run_counter(cls, ctx: CounterContext, client: Any, keys: Any) -> None:
        """The counter loop, on a client of its own (closed after it), given the last
        of :meth:`worker_args`."""
        raise NotImplementedError

    @classmethod
    def run_printer(cls, ctx: PrinterContext, client: Any, keys: Any) -> None:
        """The printer loop, as :meth:`run_counter`."""
        raise NotImplementedError

    def figures(self) -> dict[str, Any]:
        return dict(self._figures)

    def final_figures(self, data: Mapping[str, bytes]) -> None:
        """The last part's read of the data keys as it removed them (override to keep)."""

    def teardown(self) -> None:
        client, ns, keeper = self.client, self.namespace, self.keeper
        self.client = self.namespace = self.keeper = None
        if keeper is not None:
            keeper.stop()
        if client is None:
            return
        try:
            if ns is not None:
                final = ns.release(client)
                if final is not None:
                    self.final_figures(final)
        finally:
            client.close()


@contextlib.contextmanager
def _connected(role: str, index: int, url: str, kwargs: Mapping[str, Any]) -> Iterator[Any]:
    """A worker's client to the server, closed when its loop ends; the server going away
    ends the worker with one line (:func:`redis_conn.server_lost`)."""
    with redis_conn.server_lost(role, index, url):
        client = redis_conn.open_client(url, kwargs)
        try:
            yield client
        finally:
            client.close()
