"""``redis-pubsub``: each increment is a message PUBLISHed on a Redis channel.

Pub/Sub is at-most-once: the server hands a message to the subscribers connected at
that instant and keeps nothing. A subscriber that is absent misses what is published
meanwhile, and one too slow to read is disconnected by the server once its output
buffer passes ``client-output-buffer-limit pubsub`` (what it had not read is dropped).
Either way the message is gone, and after a stop ``lost = attempted - value`` shows it:
the cross-host counterpart of the pipe's corruption.

Printer ``j`` subscribes to channel ``NS:ch:j``; counters publish in turn to every
printer's channel, so each message is counted once. A counter waits (a few seconds at
most) until every channel has its subscriber before it publishes. At a stop labd
publishes an empty message on every channel, and a printer returns at it.
"""

from __future__ import annotations

import time
from typing import Any

from labd.mechanisms import redis_conn
from labd.mechanisms.redis_base import RedisMechanism
from labd.params import PAYLOAD
from labd.worker.contexts import CounterContext, PrinterContext

_READ_WAIT_S = 0.5
_SUBSCRIBED_WAIT_S = 10.0


class RedisPubSub(RedisMechanism):
    """Redis Pub/Sub: one message per increment, lost if its subscriber is not there."""

    name = "redis-pubsub"
    summary = "Redis Pub/Sub, at-most-once: a slow or absent subscriber loses messages"
    params = (PAYLOAD, *redis_conn.PARAMS)
    messages = True
    keys = ()

    def worker_args(self) -> tuple[Any, ...]:
        assert self.namespace is not None
        url, kwargs, _ = super().worker_args()
        channels = [f"{self.namespace.prefix}:ch:{j}" for j in range(self._printers)]
        return (url, kwargs, channels)

    def release_printers(self) -> None:
        client, ns = self.client, self.namespace
        if client is None or ns is None:
            return
        for j in range(self._printers):
            client.publish(f"{ns.prefix}:ch:{j}", b"")

    @classmethod
    def run_counter(cls, ctx: CounterContext, client: Any, channels: Any) -> None:
        data = b":" + b"x" * int(ctx.values.get("payload", 16))
        publish, k = client.publish, ctx.index
        _wait_subscribed(ctx, client, channels)
        batches, clock = ctx.sends(wall=True)  # paced: the tick each message was due at
        for n in batches:
            for _ in range(n):
                k = (k + 1) % len(channels)
                publish(channels[k], b"%d%s" % (clock(), data))

    @classmethod
    def run_printer(cls, ctx: PrinterContext, client: Any, channels: Any) -> None:
        redis = redis_conn.redis_module()
        offset = time.time_ns() - time.monotonic_ns()
        received = ctx.received
        sub = _subscribe(client, channels[ctx.index])
        try:
            while True:
                try:
                    msg = sub.get_message(timeout=_READ_WAIT_S)
                except (redis.ConnectionError, redis.TimeoutError):
                    # dropped by the server (too slow): what it held is lost; come back
                    sub.close()
                    sub = _subscribe(client, channels[ctx.index])
                    continue
                if msg is None:
                    if ctx.stopping():
                        return
                    continue
                data = msg["data"]
                if not data:
                    return
                received(int(data.partition(b":")[0]) - offset)
        finally:
            sub.close()


def _subscribe(client: Any, channel: str) -> Any:
    sub = client.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(channel)
    sub.get_message(timeout=_READ_WAIT_S)  # the subscription's confirmation
    return sub


def _wait_subscribed(ctx: CounterContext, client: Any, channels: list[str]) -> None:
    """Until every channel has a subscriber (or a few seconds passed, or a stop)."""
    give_up = time.monotonic() + _SUBSCRIBED_WAIT_S
    while time.monotonic() < give_up:
        counts = client.pubsub_numsub(*channels)
        if all(n > 0 for _, n in counts):
            return
        if ctx.wait(0.01):
            return
