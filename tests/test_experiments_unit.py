"""Experiments without a daemon: the spec's checks and plan, the statistics, the charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labctl import charts, report
from labd.errors import LimitError, MechanismError, ParamError, UsageError
from labd.experiments import stats
from labd.experiments.records import _SCHEMA, Records
from labd.experiments.spec import LESSON_CASES, Limits, Point, build_plan, parse_case
from labd.history import History
from labd.mechanisms.manager import ManagerValue
from labd.mechanisms.pipe import PipeMessages
from labd.mechanisms.queue import QueueMessages
from labd.mechanisms.shared import SharedValue
from labd.params import Param

MECHS = {
    "shared": SharedValue,
    "manager": ManagerValue,
    "queue": QueueMessages,
    "pipe": PipeMessages,
}
ROOMY = Limits(per_set=256, total=2048, running=0)


def params_of(name: str) -> tuple[Param, ...]:
    if name not in MECHS:
        raise MechanismError(f"unknown mechanism {name!r}")
    return MECHS[name].params


def plan(limits: Limits = ROOMY, **spec: Any) -> Any:
    return build_plan(spec, params_of, limits)


def test_cases_parse_and_default_to_the_lesson() -> None:
    assert parse_case("shared") == ("shared", {})
    assert parse_case("pipe:payload=4096,shared_end=yes") == (
        "pipe",
        {"payload": "4096", "shared_end": "yes"},
    )
    p = plan()
    assert [x.case for x in p.points] == list(LESSON_CASES)
    assert p.repeat == 3 and p.seconds == 2.0 and p.interval == 0.0


def test_grid_and_interleaved_order_recorded_by_seed() -> None:
    p = plan(cases=["queue", "pipe"], counters=[1, 2], sweep="payload=16,1024", repeat=3, seed=7)
    assert len(p.points) == 8
    assert {(x.counters, x.sweep_value) for x in p.points} == {
        (n, v) for n in (1, 2) for v in ("16", "1024")
    }
    assert all(x.given["payload"] == x.sweep_value for x in p.points)
    rounds = [[i for i, r in p.order if r == k] for k in range(3)]
    assert all(sorted(r) == list(range(8)) for r in rounds)  # every point once per round
    assert len({tuple(r) for r in rounds}) > 1  # shuffled, not the same order each round
    again = plan(cases=["queue", "pipe"], counters=[1, 2], sweep="payload=16,1024", seed=7)
    assert again.order == p.order


@pytest.mark.parametrize(
    ("spec", "error", "says"),
    [
        ({"cases": ["nope"]}, MechanismError, "unknown mechanism 'nope'"),
        ({"cases": ["shared:colour=red"]}, ParamError, "no parameter 'colour'"),
        ({"cases": ["shared:lock=maybe"]}, ParamError, "not yes or no"),
        ({"cases": ["shared"], "sweep": "payload=1,2"}, ParamError, "has no parameter 'payload'"),
        ({"cases": ["queue:payload=9"], "sweep": "payload=1,2"}, ParamError, "drop one"),
        ({"cases": ["shared:duration=3"]}, ParamError, "experiment sets it"),
        ({"cases": ["shared", "shared"]}, UsageError, "given twice"),
        ({"seconds": 0.1}, UsageError, "out of range"),
        ({"interval": 0.5, "seconds": 1.0}, UsageError, "too short a window"),
        ({"repeat": 0}, UsageError, "--repeat"),
        ({"counters": [0]}, UsageError, "not a positive integer"),
        ({"sweep": "payload"}, UsageError, "KEY=V1,V2"),
        ({"sweep": 5}, UsageError, "--sweep takes KEY=V1,V2"),
        ({"seed": True}, UsageError, "seed must be an integer"),
        ({"colour": 1}, UsageError, "no key 'colour'"),
    ],
)
def test_bad_specs_are_refused_up_front(spec: dict[str, Any], error: type, says: str) -> None:
    with pytest.raises(error, match=None) as caught:
        plan(**spec)
    assert says in caught.value.args[0]


def test_process_limits_say_how_many_are_needed() -> None:
    with pytest.raises(LimitError, match="limit of 4 per set"):
        plan(Limits(4, 2048, 0), cases=["shared"], counters=[1, 8])
    with pytest.raises(LimitError, match="needs 9 processes; with 5 running"):
        plan(Limits(256, 10, 5), cases=["shared"], counters=[1, 8])


def _run(
    rate: float, lost: int = 0, attempted: int = 1000, hist: dict[str, int] | None = None
) -> dict[str, Any]:
    return {
        "rate": rate,
        "attempted_total": attempted,
        "lost": lost,
        "corrupt": 0,
        "cpu_us_per_inc": 1.0,
        "histogram": hist or {},
        "params": {"lock": False, "name": "x"},
    }


def test_figures_ratio_and_significance() -> None:
    points = [Point("a", "shared", 1, {}), Point("b", "shared", 1, {}), Point("c", "shared", 1, {})]
    runs = {
        0: [_run(100), _run(110), _run(90, lost=100)],
        1: [_run(50), _run(52), _run(48)],
        2: [_run(95), _run(105), _run(99)],
    }
    figs = [stats.point_figures(p, runs[i]) for i, p in enumerate(points)]
    stats.compare(figs, points)
    a, b, c = figs
    assert a["rate_median"] == 100 and a["rate_mad"] == 10 and a["spread_pct"] == 20
    assert a["lost_pct"] == pytest.approx(100 / 3000 * 100, abs=1e-3)
    assert a["params"] == {"lock": False}  # the experiment's own name is not a result
    assert a["best"] and a["significant"] is None
    assert b["ratio"] == 0.5 and b["significant"] is True
    assert c["significant"] is False  # within a's range: not significant
    assert c["ratio_err"] > 0


def test_latency_percentiles_and_warnings() -> None:
    from labd.worker import board

    hist = {str(board.bucket(10_000)): 90, str(board.bucket(1_000_000)): 10}
    f = stats.point_figures(Point("q", "queue", 1, {}), [_run(10, hist=hist)])
    assert f["latency_p50_us"] < 20 < 900 < f["latency_p99_us"] <= f["latency_max_us"]
    noisy = stats.point_figures(Point("a", "shared", 1, {}), [_run(50), _run(100)])
    warned = stats.warnings([noisy], {"cpus_usable": 2, "load_before": [5.0], "load_after": [1]})
    assert any("spread 67%" in w for w in warned)
    assert any("load average 5.0 before the runs exceeds the 2" in w for w in warned)
    # the load after the runs is the experiment's own: no claim of other work
    own = stats.warnings([noisy], {"cpus_usable": 2, "load_before": [0.3], "load_after": [4.5]})
    assert not any("load average" in w for w in own)


def test_charts_fit_80_columns_and_use_log_for_decades() -> None:
    items = [("shared:lock=yes-and-a-long-name", 4.1e6, "0.00"), ("manager", 3.1e3, "12.50")]
    text = charts.bars("rate", items, side_title="lost %")
    assert "log scale" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    linear = charts.bars("rate", [("a", 10.0, ""), ("b", 5.0, "")])
    assert "log" not in linear
    series = [charts.Series("a", [(0, 1.0), (1, 5.0), (2, 3.0)]), charts.Series("b", [(0, 2.0)])]
    drawn = charts.lines("rate", series, [(0, "1"), (1, "2"), (2, "4")])
    assert all(len(line) <= 80 for line in drawn.splitlines())
    assert "* a" in drawn and "o b" in drawn


def test_experiment_csv_has_a_row_per_run_and_per_case() -> None:
    e = {"runs": [{"seq": 0, "case": "a"}, {"seq": 1, "case": "a"}], "cases": [{"case": "a"}]}
    lines = report.experiment_csv(e).splitlines()
    assert lines[0].startswith("kind,") and [x.split(",")[0] for x in lines[1:]] == [
        "run",
        "run",
        "case",
    ]


def test_an_older_store_gains_the_owner_and_the_listing_shows_it(tmp_path: Path) -> None:
    history = History.open(tmp_path)
    old = _SCHEMA.split(";")[0].replace(",\n    owner TEXT", "")  # as labd 0.1.0 made it
    assert "owner" not in old
    history.store.transact(lambda conn: conn.execute(old))
    try:
        records = Records(history)
        plan = {"points": [{"case": "shared"}], "counters": [1], "sweep_key": None, "order": []}
        before = records.new({}, plan, {})  # the column is there
        mine = records.new({}, plan, {}, owner="alice")
        records.set_state(before, "done")  # both read from the file, not from memory
        records.set_state(mine, "done")
        assert records.get(before)["owner"] is None  # type: ignore[index]
        assert records.get(mine)["owner"] == "alice"  # type: ignore[index]
    finally:
        history.close()
    rows = [
        {"id": 2, "state": "done", "cases": ["shared"], "owner": "alice"},
        {"id": 1, "state": "done", "cases": ["shared"], "owner": "bob"},
    ]
    listed = report.experiments_table(rows).splitlines()
    assert listed[0].split()[-1] == "OWNER" and listed[1].split()[-1] == "alice"
    assert "OWNER" not in report.experiments_table(rows[:1])  # one user: no column
