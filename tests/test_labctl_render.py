"""labctl's text output, from sample API results (no daemon)."""

from __future__ import annotations

from typing import Any

import click
import pytest

from labctl import humane, render
from labctl.table import pairs, table


def a_set(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": 7,
        "name": "racy",
        "mechanism": "shared",
        "variant": "shared 8 interval=0",
        "messages": False,
        "state": "running",
        "counters": 8,
        "printers": 1,
        "params": {"lock": False, "interval": 0.0, "duration": None, "name": "racy"},
        "value": 1_234_567,
        "attempted": 6_000_000,
        "lost": 4_765_433,
        "in_flight": 0,
        "corrupt": 0,
        "rate": 2_190_000.0,
        "latency_p50_us": None,
        "latency_p99_us": None,
        "started_at": 1_700_000_000.0,
        "stopped_at": None,
        "processes": [
            {
                "role": "counter",
                "index": 0,
                "pid": 4242,
                "alive": True,
                "exitcode": None,
                "cpu_percent": 99.5,
                "rss": 17_600_000,
            }
        ],
        "error": None,
    }
    record.update(changes)
    return record


def plain(text: str) -> str:
    return click.unstyle(text)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(0, "0"), (3.0, "3"), (0.5, "0.5"), (999, "999"), (1234, "1.23k"), (12_345, "12.3k"),
     (2_190_000, "2.19M"), (16_000_000, "16M"), (None, "-")],
)  # fmt: skip
def test_humane_number(value: float | None, shown: str) -> None:
    assert humane.number(value) == shown


def test_humane_units() -> None:
    assert humane.rate(1_200_000) == "1.2M/s"
    assert humane.size(3.4 * 1024 * 1024) == "3.4 MiB"
    assert humane.size(512) == "512 B"
    assert humane.count(999) == "999"
    assert humane.count(892_145) == "892k"  # one format in a column: never 892145 by 4.18M
    assert humane.count(1_234_567) == "1.23M"
    assert humane.exact(25_912_345) == "25,912,345"
    assert humane.percent(1, 3) == "33.3%"
    assert humane.percent(0, 3) == "0%"
    assert humane.percent(1, 10_000) == "<0.1%"
    assert humane.percent(1, 0) == "-"
    assert humane.micros(850) == "850 us"
    assert humane.micros(1200) == "1.2 ms"
    assert humane.duration(4.21) == "4.2s"
    assert humane.duration(192) == "3m12s"
    assert humane.duration(7500) == "2h05m"


def test_table_aligns_columns_and_styles_after_padding() -> None:
    lines = table(("ID", "STATE"), [["1", "running"], ["10", "failed"]], right={0})
    assert lines == ["ID  STATE", " 1  running", "10  failed"]
    styled = table(("A", "B"), [["x", "yy"]], style=lambda c, cell, padded: f"<{padded}>")
    assert styled == ["A  B", "<x>  <yy>"]
    assert pairs([("value", "1"), ("attempted", "2")]) == ["  value      1", "  attempted  2"]


def test_status_table_columns() -> None:
    sets = [a_set(), a_set(id=8, name="", state="stopped")]
    text = plain(render.status_table(sets, width=100))
    header, first, second = text.splitlines()
    assert header.split() == [
        "ID", "SET", "STATE", "VALUE", "ATTEMPTED", "LOST", "LOST%", "RATE",
    ]  # fmt: skip
    assert first.split() == [
        "7", "shared", "8", "interval=0", '"racy"', "running", "1.23M", "6M", "4.77M", "79.4%",
        "2.19M/s",
    ]  # fmt: skip
    assert second.split()[:5] == ["8", "shared", "8", "interval=0", "stopped"]
    assert second.split()[-1] == "-"  # no rate for a set that no longer runs
    assert len({len(line) for line in (header, first)}) == 1


def test_status_says_the_variant_and_fits_80_columns() -> None:
    """`shared` for the racy and the locked set alike told a learner nothing."""
    racy = a_set(id=1, name="", variant="shared 10 window=0.05 interval=0")
    locked = a_set(id=2, name="the lesson, with its lock", variant="shared 10 lock=yes")
    pipe = a_set(id=3, name="", variant="pipe 2 shared_end=yes payload=65536 interval=0",
                 messages=True, params={"shared_end": True}, corrupt=106_914, lost=0,
                 in_flight=3)  # fmt: skip
    lines = plain(render.status_table([racy, locked, pipe])).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "shared 10 lock=yes" in lines[2] and "shared 10 window=0.0" in lines[1]
    wide = plain(render.status_table([racy, locked], width=120)).splitlines()
    assert '"the lesson, with its lock"' in wide[2]
    assert "pipe 2 shared_end" in lines[3]
    assert "IN FLIGHT" in lines[0] and "CORRUPT" in lines[0]
    assert lines[3].split()[-1] in ("107k", "4.18M/s", "2.19M/s")


def test_in_flight_and_corrupt_only_where_they_apply() -> None:
    header = plain(render.status_table([a_set()])).splitlines()[0]
    assert "IN FLIGHT" not in header and "CORRUPT" not in header
    queue = a_set(messages=True, variant="queue 3")
    assert "IN FLIGHT" in plain(render.status_table([queue])).splitlines()[0]


def test_lost_is_red_above_zero_green_at_zero_and_no_color_turns_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    red = render.status_table([a_set()])
    assert click.style("4.77M", fg="red", bold=True) in red
    assert click.style("   0", fg="green") in render.status_table([a_set(lost=0)])
    assert "lost" in render.stopped_line(a_set()) and "\x1b[31m" in render.stopped_line(a_set())
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in render.status_table([a_set()]) + render.stopped_line(a_set())


def test_status_table_empty_teaches() -> None:
    assert "labctl spawn" in render.status_table([])


def test_status_table_tolerates_missing_keys() -> None:
    assert "-" in render.status_table([{"id": 1}])


def test_mechanisms_lists_params_with_defaults_types_and_ranges() -> None:
    interval = {"name": "interval", "type": "float", "default": 1.0, "help": "tick", "min": 0.0,
                "max": 3600.0}  # fmt: skip
    mechs: list[dict[str, Any]] = [
        {"name": "shared", "summary": "a Value", "source": "ipclab", "messages": False,
         "params": [{"name": "lock", "type": "bool", "default": False, "help": "use the lock"},
                    interval]},
        {"name": "queue", "summary": "a Queue", "source": "ipclab", "messages": True,
         "params": [{"name": "start_method", "type": "str", "default": "forkserver", "help": "how",
                     "choices": ["forkserver", "spawn"]}, interval]},
        {"name": "broken", "summary": "", "source": "example", "params": [], "error": "boom"},
    ]  # fmt: skip
    text = plain(render.mechanisms(mechs))
    assert "shared  a Value  (ipclab)" in text
    assert "queue  a Queue  (ipclab, messages)" in text
    assert "lock=no" in text and "use the lock" in text
    assert "start_method=forkserver" in text and "[forkserver|spawn]" in text
    assert "failed to load: boom" in text
    assert text.count("interval=1") == 1  # shared by every loaded mechanism: shown once
    assert "common parameters" in text and "[0..3600]" in text


def test_inspect_shows_every_section() -> None:
    record = a_set(
        events=[{"state": "running", "at": 1_700_000_001.5, "detail": None}],
        latency_p50_us=180.0,
        latency_p99_us=2047.0,
        error="counter 3 died",
    )
    text = plain(render.inspect(record))
    assert text.splitlines()[0] == 'set 7 "racy": shared 8 interval=0, running'
    for part in ("parameters", "lock", "metrics", "1,234,567", "4,765,433 (79.4%)",
                 "latency p99", "2.05 ms", "processes", "4242", "16.8 MiB", "99.5",
                 "error: counter 3 died", "events", "running"):  # fmt: skip
        assert part in text, part


def test_stopped_lines() -> None:
    small = a_set(state="stopped", name="", variant="shared 8", value=1_234, attempted=6_000,
                  lost=4_766)  # fmt: skip
    assert plain(render.stopped([small])) == (
        "set 7 (shared 8) stopped: value 1,234, attempted 6,000, lost 4,766 (79.4%)"
    )
    assert render.stopped([]) == "no sets to stop"


def test_a_stopped_line_too_wide_for_80_columns_puts_its_figures_on_a_line_of_their_own() -> None:
    text = plain(render.stopped([a_set(state="stopped")]))
    assert text.splitlines() == [
        'set 7 "racy" (shared 8 interval=0) stopped:',
        "  value 1,234,567, attempted 6,000,000, lost 4,765,433 (79.4%)",
    ]
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_garbled_pipe_is_corrupt_not_lost_after_stop() -> None:
    pipe = a_set(state="stopped", variant="pipe 2 shared_end=yes payload=65536 interval=0",
                 value=1_108_000, attempted=1_214_914, lost=0, corrupt=106_914)  # fmt: skip
    text = plain(render.stopped_line(pipe))
    assert "lost 0 (0%), corrupt 106,914 (8.8%)" in text and "pipe 2 shared_end=yes" in text


def test_spawn_says_what_it_started() -> None:
    text = plain(render.spawned(a_set(printers=1)))
    assert text.startswith("started set 7: shared 8 interval=0 (8 counters, 1 printer)")
    assert "watch 7" in text


def test_tail_lines() -> None:
    assert render.tail_lines([[1, "Time: 1"], [2, "Time: 2"]]) == "Time: 1\nTime: 2"
