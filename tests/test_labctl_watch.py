"""The live ``watch`` view, with a scripted client and scripted keys (no terminal)."""

from __future__ import annotations

from typing import Any

import click

from labctl import watch
from labd.protocol import Address


class ScriptedClient:
    address = Address(path="/fake/labd.sock")

    def __init__(self) -> None:
        self.calls = 0

    def status(self, ids: Any = ()) -> list[dict[str, Any]]:
        self.calls += 1
        return [
            {"id": 7, "mechanism": "queue", "variant": "queue 3", "messages": True,
             "state": "running", "value": 10 * self.calls,
             "attempted": 10 * self.calls, "lost": 0, "in_flight": 2, "rate": 20.0,
             "latency_p50_us": 350.0, "latency_p99_us": 1500.0, "processes_alive": 2,
             "processes_total": 3},
        ]  # fmt: skip


class ScriptedKeys(watch.Keys):
    """Nothing typed for ``quiet`` frames, then ``typed``."""

    def __init__(self, quiet: int, typed: str) -> None:
        super().__init__(None)
        self.left = quiet
        self.typed = typed

    def wait(self, timeout: float) -> str:
        self.left -= 1
        return self.typed if self.left < 0 else ""


def test_sparkline_scales_to_the_largest_value() -> None:
    assert watch.sparkline([0.0, 5.0, 10.0]) == " ▄█"
    assert watch.sparkline([0.0, 0.0]) == "  "
    assert watch.sparkline([1.0, 2.0], watch.ASCII_BLOCKS) == "=@"
    assert watch.sparkline([]) == ""


def test_sparks_take_one_point_per_period() -> None:
    sparks = watch.Sparks(points=3, every=1.0)
    for now, rate in [(0.0, 1.0), (0.5, 99.0), (1.0, 2.0), (2.0, 4.0), (3.0, 4.0)]:
        sparks.add([{"id": 1, "rate": rate}], now)
    assert sparks.line(1) == "▄██"  # 2, 4, 4: the point at 0.5 s was skipped, 1.0 fell off
    assert sparks.line(2) == ""


def test_frame_has_every_live_figure() -> None:
    sets = ScriptedClient().status()
    lines = [click.unstyle(line) for line in watch.frame(sets, watch.Sparks(), "HEADER", width=120)]
    assert lines[0] == "HEADER"
    assert lines[2].split() == [
        "ID", "SET", "STATE", "VALUE", "ATTEMPTED", "LOST", "IN", "FLIGHT", "RATE",
        "P50", "P99", "ALIVE", "LAST", "20", "S",
    ]  # fmt: skip
    assert lines[3].split() == [
        "7", "queue", "3", "running", "10", "10", "0", "2", "20/s", "350", "us", "1.5", "ms",
        "2/3",
    ]  # fmt: skip
    assert watch.frame([], watch.Sparks(), "H")[-1].startswith("no sets")


def test_fit_cuts_to_the_terminal() -> None:
    assert watch.fit(["a" * 50, "b", "c", "d"], columns=10, rows=3) == ["a" * 7 + "..", "b"]


def test_q_ends_the_view_and_the_cursor_comes_back() -> None:
    out: list[str] = []
    client = ScriptedClient()
    watch.watch_live(client, (7,), out=out.append, tty=True, keys=ScriptedKeys(2, "xq"))
    assert client.calls == 3
    assert out[0] == watch.HIDE_CURSOR
    assert out[-1] == watch.SHOW_CURSOR
    frames = out[1:-1]
    assert "every 0.1 s; q or Ctrl-C to stop" in frames[0]
    assert frames[1].startswith("\r\x1b[")  # redrawn over the previous picture
    assert " 30 " in frames[2]


def test_ctrl_c_ends_the_view_quietly_and_plain_output_has_no_escapes() -> None:
    out: list[str] = []

    class Interrupting(ScriptedKeys):
        def wait(self, timeout: float) -> str:
            raise KeyboardInterrupt

    watch.watch_live(ScriptedClient(), (), out=out.append, tty=False, keys=Interrupting(0, ""))
    assert len(out) == 1
    assert "\x1b" not in out[0] and "every 1 s" in out[0]


def test_at_80_columns_the_view_fits_and_keeps_the_set_and_its_figures() -> None:
    sets = [
        {**ScriptedClient().status()[0], "name": "the lesson's queue"},
        {"id": 8, "variant": "shared 10 lock=yes window=0.05", "state": "running",
         "value": 892_145, "attempted": 4_180_000, "lost": 0, "rate": 14.9},
    ]  # fmt: skip
    lines = [click.unstyle(line) for line in watch.frame(sets, watch.Sparks(), "H", width=80)]
    assert all(len(line) < 80 for line in lines), lines
    assert "shared 10 lock=yes" in lines[4]
    assert "892k" in lines[4] and "4.18M" in lines[4]  # one format: never 892145 by 4.18M
    assert lines[2].split()[-1] == "RATE"


def test_a_stopped_set_draws_no_sparkline() -> None:
    sparks = watch.Sparks(points=3, every=1.0)
    running = {"id": 1, "state": "running", "rate": 5.0, "variant": "queue 1"}
    stopped = {"id": 2, "state": "stopped", "rate": 5.0, "variant": "queue 1"}
    for now in (0.0, 1.0, 2.0):
        sparks.add([running, stopped], now)
    lines = watch.frame([running, stopped], sparks, "H", blocks=watch.ASCII_BLOCKS, width=200)
    assert lines[3].rstrip().endswith("@@@")
    assert not lines[4].rstrip().endswith(("@", "#", "%")), lines[4]
