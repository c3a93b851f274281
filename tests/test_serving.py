"""Each connection served with the least work per call (labd/server/serving.py): requests
sent back to back, frames the client compresses, answers larger than a socket's buffer,
and many clients at once all get rpyc's answers; concurrent clients share one status
text per sampler tick. Behaviour only: the speed is bench/scale.py's to measure."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import rpyc
from helpers import wait_for

from labd.protocol import SET_KEYS
from labd.snapshot import KEEP_WARM, Snapshots

FAST = json.dumps({"interval": 0.05})
CLIENTS = 8


def call(conn: rpyc.Connection, method: str, *args: Any) -> Any:
    return json.loads(getattr(conn.root, method)(*args))


@pytest.mark.daemon
def test_requests_sent_back_to_back_are_each_answered_in_order(rpc: rpyc.Connection) -> None:
    sid = call(rpc, "spawn", "fake", 2, FAST)["id"]
    status = rpyc.async_(rpc.root.status)
    inspect = rpyc.async_(rpc.root.inspect)
    pending = [status((sid,)) if k % 2 else inspect(sid) for k in range(40)]  # one burst
    for k, result in enumerate(pending):
        result.wait()
        answer = json.loads(result.value)
        if k % 2:
            assert [s["id"] for s in answer] == [sid]
        else:
            assert answer["id"] == sid and len(answer["processes"]) == 3


@pytest.mark.daemon
def test_a_compressed_request_and_an_answer_larger_than_a_socket_buffer(
    rpc: rpyc.Connection,
) -> None:
    sid = call(rpc, "spawn", "fake", 2, FAST)["id"]
    ids = (sid,) * 3000  # rpyc's client compresses a request this large
    text = rpc.root.status(ids)
    assert len(text) > 1 << 20  # well above any socket buffer: written in many pieces
    rows = json.loads(text)
    assert len(rows) == 3000 and rows[0] == rows[-1] and set(SET_KEYS) <= set(rows[0])
    with pytest.raises(Exception, match="no set 999"):
        rpc.root.status((999,) * 3000)  # an error answer on the same connection
    assert [s["id"] for s in call(rpc, "status", (sid,))] == [sid]  # and it goes on


@pytest.mark.daemon
def test_concurrent_clients_get_the_same_status_text_within_a_tick(labd_daemon: Any) -> None:
    conns = [labd_daemon.connect() for _ in range(CLIENTS)]
    try:
        sid = call(conns[0], "spawn", "fake", 3, FAST)["id"]
        seen: set[float] = set()

        def ticks_seen() -> bool:  # asking keeps the snapshot warm: from the next tick
            seen.add(call(conns[0], "status", (sid,))[0]["sampled_at"])  # on, the sampler
            return len(seen) > 2  # builds each tick's text before anyone asks for it

        wait_for(ticks_seen, 10, "two sampler ticks")
        start = threading.Barrier(CLIENTS)
        texts: list[list[str]] = [[] for _ in conns]

        def poll(k: int) -> None:
            status = conns[k].root.status
            start.wait(30)
            texts[k] += [status(()) for _ in range(30)]

        threads = [threading.Thread(target=poll, args=(k,)) for k in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        by_tick: dict[float, set[str]] = {}
        for text in (t for answers in texts for t in answers):
            (row,) = json.loads(text)
            assert row["id"] == sid
            by_tick.setdefault(row["sampled_at"], set()).add(text)
        assert len(by_tick) > 1, "the sampler never ticked while the clients asked"
        assert all(len(same) == 1 for same in by_tick.values()), "one tick, several texts"
        assert sum(len(a) for a in texts) == CLIENTS * 30
    finally:
        for conn in conns:
            conn.close()


class Builds:
    def __init__(self) -> None:
        self.count = 0
        self.meanwhile: Callable[[], None] = lambda: None  # what happens during a build

    def __call__(self) -> dict[int, str]:
        self.count += 1
        self.meanwhile()
        return {1: f'{{"id":1,"build":{self.count}}}'}


def test_the_sampler_builds_the_snapshot_while_clients_ask_and_not_otherwise() -> None:
    now = [100.0]
    build = Builds()
    snaps = Snapshots(build, clock=lambda: now[0])
    snaps.tick()  # nobody asked yet: nothing is built
    assert build.count == 0
    first = snaps.get()  # the first caller builds
    assert build.count == 1 and first.text == '[{"id":1,"build":1}]'
    snaps.tick()  # a client asked lately: the tick builds the next one itself
    assert build.count == 2
    second = snaps.get()
    assert build.count == 2 and second.text == '[{"id":1,"build":2}]'
    assert snaps.get() is second  # every caller until the next tick: the same text
    now[0] += KEEP_WARM + 0.1  # nobody asked since: the tick only ends the generation
    snaps.tick()
    assert build.count == 2 and snaps.get().text == '[{"id":1,"build":3}]'
    snaps.invalidate()  # a state change: the next caller builds
    assert snaps.get().text == '[{"id":1,"build":4}]'
    build.meanwhile = snaps.invalidate  # a state change while the tick builds: its text
    snaps.tick()  # may have missed it, so it is not handed out
    build.meanwhile = lambda: None
    assert snaps.get().text == '[{"id":1,"build":6}]'
