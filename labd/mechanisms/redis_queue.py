"""``redis-queue``: each increment is a message on a Redis list, LPUSH in, BRPOP out.

Counters LPUSH ``SENT_NS:PAYLOAD`` (the wall clock, so the latency holds across hosts
whose clocks agree); printers BRPOP and count what arrives: nothing is lost to a race.
The list is bounded like the built-in queue: a counter whose push finds it longer than
``maxsize`` waits until the printers have taken it below half. At a stop, once the
counters have exited, labd pushes one empty message per printer behind every message,
and each printer returns at its empty one.

Redis removes a list that printers emptied, and a plain LPUSH would make it anew without
an expiry (a dead set's list would then stay for good). So counters push with LPUSHX,
which only adds to a list that exists (and costs what LPUSH costs); when the list is
gone, a small script makes it and gives it the set's expiry (``key_ttl=``) in one step,
so the list never exists without one. The keeper renews it as the set's other keys.
"""

from __future__ import annotations

import time
from typing import Any

from labd.mechanisms import redis_conn
from labd.mechanisms.redis_base import RedisMechanism
from labd.params import PAYLOAD, maxsize_param
from labd.worker.contexts import CounterContext, PrinterContext

_POP_WAIT_S = 0.5  # a printer checks for a stop request this often while idle
_FULL_POLL_S = 0.001
# Push ARGV[2..] onto the list KEYS[1]; if that made the list, it expires in ARGV[1] ms.
_MAKE = """
local n = redis.call('LPUSH', KEYS[1], unpack(ARGV, 2))
if n == #ARGV - 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RedisQueue(RedisMechanism):
    """A Redis list: one message per increment, printers block on BRPOP."""

    name = "redis-queue"
    summary = "a Redis list: LPUSH one message per increment, printers block on BRPOP"
    params = (PAYLOAD, maxsize_param("list", "counters wait", 10000000), *redis_conn.PARAMS)
    messages = True
    keys = ("list",)

    def release_printers(self) -> None:
        client, ns = self.client, self.namespace
        if client is not None and ns is not None and self._printers:
            ttl = redis_conn.ttl_ms(self.values)
            client.eval(_MAKE, 1, ns.data["list"], ttl, *([b""] * self._printers))

    @classmethod
    def run_counter(cls, ctx: CounterContext, client: Any, keys: Any) -> None:
        key, push, length = keys["list"], client.lpushx, client.llen
        make, on = client.register_script(_MAKE), [keys["list"]]
        data = b":" + b"x" * int(ctx.values.get("payload", 16))
        high = int(ctx.values.get("maxsize", 1000))
        ttl = redis_conn.ttl_ms(ctx.values)
        batches, clock = ctx.sends(wall=True)  # paced: the tick each message was due at
        for n in batches:
            size = 0
            for _ in range(n):
                msg = b"%d%s" % (clock(), data)
                size = push(key, msg) or make(keys=on, args=[ttl, msg])
            while size > high and not ctx.stopping():  # bounded: let printers catch up
                time.sleep(_FULL_POLL_S)
                size = length(key) * 2

    @classmethod
    def run_printer(cls, ctx: PrinterContext, client: Any, keys: Any) -> None:
        key, pop, received = keys["list"], client.brpop, ctx.received
        offset = time.time_ns() - time.monotonic_ns()  # wall-clock stamps to monotonic
        while True:
            item = pop(key, timeout=_POP_WAIT_S)
            if item is None:
                if ctx.stopping():
                    return
                continue
            msg = item[1]
            if not msg:
                return
            received(int(msg.partition(b":")[0]) - offset)
