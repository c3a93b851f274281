"""labd's connection budgets as bookkeeping (no daemon): by stage, by source, and the
oldest handshake of a source making room for its newest."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from labd.server.admission import Admission, ClientLimits


@pytest.fixture
def socks() -> Iterator[list[socket.socket]]:
    pairs = [socket.socketpair() for _ in range(8)]
    yield [a for a, _ in pairs]
    for a, b in pairs:
        a.close()
        b.close()


def test_a_sources_oldest_handshake_makes_room_for_its_newest(socks: list[socket.socket]) -> None:
    adm = Admission(ClientLimits(max_clients=4, per_user=2, pending_per_source=2))
    assert adm.enter_pending(socks[0], "host a") == (None, None)
    assert adm.enter_pending(socks[1], "host a") == (None, None)
    assert adm.enter_pending(socks[2], "host b") == (None, None)  # another source: its own
    assert adm.enter_pending(socks[3], "host a") == (None, socks[0])  # the oldest of a
    assert adm.enter_pending(socks[4], "host a") == (None, socks[1])
    for s in socks[:5]:  # the cut ones leave too, and nothing is counted twice
        adm.leave_pending(s)
    assert adm.enter_pending(socks[5], "host a") == (None, None)
    assert adm.enter_pending(socks[6], "host a") == (None, None)
    adm.leave_pending(socks[5])
    adm.leave_pending(socks[6])


def test_the_pending_budget_in_all_refuses() -> None:
    adm = Admission(ClientLimits(max_clients=1, pending_per_source=64))
    many = [socket.socket(socket.AF_UNIX) for _ in range(65)]
    try:
        for i, s in enumerate(many[:64]):  # at least 64 in all, whatever --max-clients says
            assert adm.enter_pending(s, f"host {i}") == (None, None)
        why, evicted = adm.enter_pending(many[64], "host x")
        assert evicted is None and why == "64 handshakes are under way already"
    finally:
        for s in many:
            s.close()


def test_served_clients_are_capped_in_all_and_per_user() -> None:
    adm = Admission(ClientLimits(max_clients=3, per_user=2))
    assert adm.enter_served("uid 1") is None
    assert adm.enter_served("uid 1") is None
    why = adm.enter_served("uid 1")
    assert why == "2 clients of uid 1 are served already (--max-clients-per-user)"
    assert adm.enter_served("uid 2") is None
    assert adm.enter_served("uid 3") == "3 clients are served already (--max-clients)"
    adm.leave_served("uid 1")
    assert adm.enter_served("uid 3") is None
