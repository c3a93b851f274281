"""``redis``: a counter in a Redis server, the lesson's race across hosts.

* ``op=getset``: GET, then SET to the value plus one: two round trips, and any other
  client's increment between them is overwritten (the race Redis's own documentation
  tells: two clients end at 11 instead of 12);
* ``op=incr``: INCR, atomic in the server: exact;
* ``op=watch``: WATCH, GET, MULTI, SET, EXEC, again while EXEC fails because the key
  changed: exact, and the retries are a figure of their own (``extra.retries``).

Counters add their retries to the set's ``retries`` key once a batch, inside the MULTI
of the next batch's first transaction (no round trip of its own); the daemon reads the
value and the retries in one round trip when it samples. A group's parts share one
key (``group=``, written by ``labctl spawn ... --on``): the last part to end reads the
final value and removes the keys (``extra.group_value``).

Both keys exist from setup with their expiry (``key_ttl=``), and every write keeps it:
INCR and INCRBY do, and SET is given KEEPTTL (a plain SET would drop the expiry, and a
dead set's key would stay for good).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labd.mechanisms import redis_conn
from labd.mechanisms.redis_base import RedisMechanism
from labd.params import Param
from labd.worker.contexts import CounterContext, PrinterContext

OPS = ("getset", "incr", "watch")


class RedisCounter(RedisMechanism):
    """A counter key every counter process increments through the Redis server."""

    name = "redis"
    summary = (
        "a counter in a Redis server: op=getset races, incr and watch (with retries) are exact"
    )
    params = (
        Param("op", str, "getset", "how a counter increments the key", choices=OPS),
        *redis_conn.PARAMS,
        redis_conn.GROUP_PARAM,
    )
    messages = False
    keys = ("value", "retries")
    zeroed = 2  # made at setup with their expiry; SET keeps it (KEEPTTL), INCR too

    def observe(self) -> int | None:
        client, ns = self.client, self.namespace  # one read: teardown may drop them
        if client is None or ns is None:
            return None
        value, retries = client.mget(ns.data["value"], ns.data["retries"])
        if self.values.get("op") == "watch":
            self._figures["retries"] = int(retries or 0)
        return int(value or 0)

    def final_figures(self, data: Mapping[str, bytes]) -> None:
        if self.group is not None:
            self._figures["group_value"] = int(data["value"] or 0)
        if self.values.get("op") == "watch":
            self._figures["retries"] = int(data["retries"] or 0)

    @classmethod
    def run_counter(cls, ctx: CounterContext, client: Any, keys: Any) -> None:
        op = str(ctx.values.get("op", "getset"))
        if op == "incr":
            _incr(ctx, client, keys["value"])
        elif op == "watch":
            _watch(ctx, client, keys["value"], keys["retries"])
        else:
            _getset(ctx, client, keys["value"])

    @classmethod
    def run_printer(cls, ctx: PrinterContext, client: Any, keys: Any) -> None:
        get, key, show = client.get, keys["value"], ctx.show
        for _ in ctx.ticks(phase=0.5):
            show(int(get(key) or 0))


def _getset(ctx: CounterContext, client: Any, key: str) -> None:
    # SET ... KEEPTTL sent as is: ``client.set(..., keepttl=True)`` sorts through its
    # dozen options at every call (redis-py 8.1: 13 Python calls more per increment
    # than a plain ``set``, 27 more than this); the command on the wire is the same
    get, command = client.get, client.execute_command
    for n in ctx.batches():
        for _ in range(n):
            command("SET", key, int(get(key) or 0) + 1, "KEEPTTL")


def _incr(ctx: CounterContext, client: Any, key: str) -> None:
    incr = client.incr
    for n in ctx.batches():
        for _ in range(n):
            incr(key)


def _watch(ctx: CounterContext, client: Any, key: str, retries_key: str) -> None:
    """WATCH, GET, MULTI, SET, EXEC until EXEC succeeds. The retries of a batch are
    added to ``retries_key`` in the first transaction of the next one (an INCRBY inside
    its MULTI: no round trip of its own, and counted only if that EXEC succeeds), and
    the last batch's once the set stops: exact at the end, a batch behind while live."""
    watch_error = redis_conn.redis_module().WatchError
    pipe = client.pipeline()
    retries = 0  # not yet added to retries_key
    for n in ctx.batches():
        tally = retries  # rides on this batch's first transaction
        for _ in range(n):
            while True:
                try:
                    pipe.watch(key)
                    value = int(pipe.get(key) or 0)
                    pipe.multi()
                    pipe.execute_command("SET", key, value + 1, "KEEPTTL")
                    if tally:
                        pipe.incrby(retries_key, tally)
                    pipe.execute()
                    break
                except watch_error:
                    retries += 1
            retries -= tally
            tally = 0
    if retries:
        client.incrby(retries_key, retries)
