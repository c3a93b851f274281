"""The live views, driven by a scripted client and a fake sleep (no terminal, no clock)."""

from __future__ import annotations

from typing import Any

import pytest

from labctl import follow
from labd.protocol import Address


class ScriptedClient:
    address = Address(path="/fake/labd.sock")

    def __init__(self, tails: list[dict[str, Any]] | None = None) -> None:
        self.tails = list(tails or [])
        self.calls: list[tuple[Any, ...]] = []

    def status(self, ids: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        self.calls.append(("status", ids))
        return [{"id": 1, "mechanism": "queue", "state": "running", "value": len(self.calls)}]

    def tail(self, set_id: int, after: int = 0, limit: int = 100) -> dict[str, Any]:
        self.calls.append(("tail", set_id, after, limit))
        return self.tails.pop(0)


def interrupt_after(n: int) -> Any:
    naps: list[float] = []

    def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) >= n:
            raise KeyboardInterrupt

    return sleep


def lines(*seqs: int) -> list[list[Any]]:
    return [[seq, f"Time: {seq}"] for seq in seqs]


def test_tail_prints_the_last_lines_once() -> None:
    out: list[str] = []
    client = ScriptedClient([{"lines": lines(8, 9), "last": 9, "state": "running"}])
    follow.tail(client, 3, 2, follow=False, out=out.append)  # type: ignore[arg-type]
    assert out == ["Time: 8\nTime: 9\n"]
    assert client.calls == [("tail", 3, 0, 2)]


def test_tail_follow_continues_after_the_last_line_until_the_set_ends() -> None:
    out: list[str] = []
    client = ScriptedClient([
        {"lines": lines(1, 2), "last": 2, "state": "running"},
        {"lines": [], "last": 2, "state": "running"},
        {"lines": lines(3), "last": 3, "state": "stopped"},
    ])  # fmt: skip
    follow.tail(client, 3, 10, follow=True, out=out.append, sleep=lambda s: None)  # type: ignore[arg-type]
    assert "".join(out) == "Time: 1\nTime: 2\nTime: 3\n"
    assert [c[2] for c in client.calls] == [0, 2, 2]


def test_tail_n0_follow_shows_only_new_lines() -> None:
    out: list[str] = []
    client = ScriptedClient([
        {"lines": lines(5), "last": 5, "state": "running"},
        {"lines": lines(6), "last": 6, "state": "failed"},
    ])  # fmt: skip
    follow.tail(client, 3, 0, follow=True, out=out.append, sleep=lambda s: None)  # type: ignore[arg-type]
    assert out == ["Time: 6\n"]
    assert client.calls[1] == ("tail", 3, 5, follow.TAIL_PAGE)


def test_tail_follow_ends_quietly_on_ctrl_c() -> None:
    out: list[str] = []
    client = ScriptedClient([
        {"lines": lines(1), "last": 1, "state": "running"},
        {"lines": lines(2), "last": 2, "state": "running"},
    ])  # fmt: skip
    # Ctrl-C in the second wait: tail returns (no KeyboardInterrupt), with what it printed
    follow.tail(client, 3, 10, follow=True, out=out.append, sleep=interrupt_after(2))  # type: ignore[arg-type]
    assert out == ["Time: 1\n", "Time: 2\n"]
    assert [c[2] for c in client.calls] == [0, 1]


@pytest.mark.parametrize("state", ["stopped", "failed", "interrupted"])
def test_tail_follow_of_a_finished_set_returns_at_once(state: str) -> None:
    client = ScriptedClient([{"lines": lines(1), "last": 1, "state": state}])
    follow.tail(client, 3, 10, follow=True, out=lambda s: None, sleep=interrupt_after(1))  # type: ignore[arg-type]
    assert len(client.calls) == 1
