"""The benchmarks' judgement of paired runs (bench/pairstats.py), and the two checks that
use it, compare_check.py and redis_bench.py, judging saved runs with ``--from``: a
verdict is only given where the sign test's bound supports it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import pairstats  # noqa: E402
from pairstats import BELOW, MET, OUTSIDE, UNDECIDED, WITHIN  # noqa: E402


def test_the_two_sided_interval_has_the_sign_tests_coverage() -> None:
    xs = [float(i) for i in range(1, 7)]
    assert pairstats.median_ci(xs) == (1.0, 6.0, 1 - 2 / 64)  # 6 values: min-max, 96.9 %
    low, high, cover = pairstats.median_ci([float(i) for i in range(1, 21)])
    assert (low, high) == (6.0, 15.0)  # k = 6 for n = 20: 1 - 2 P(Bin <= 5) = 95.9 %
    assert cover == pytest.approx(0.9586, abs=1e-4)


def test_the_lower_bound_is_the_highest_with_95_percent() -> None:
    assert pairstats.median_lower_bound([5.0, 1.0, 4.0, 2.0, 3.0]) == (1.0, 1 - 1 / 32)
    low, cover = pairstats.median_lower_bound([float(i) for i in range(1, 11)])
    assert low == 2.0  # P(Bin(10) <= 1) = 1.1 %, P(<= 2) = 5.5 %
    assert cover == pytest.approx(1 - 11 / 1024)
    assert pairstats.median_upper_bound([float(i) for i in range(1, 11)])[0] == 9.0


def test_the_lower_bound_covers_a_skewed_median_at_least_95_percent_of_the_time() -> None:
    rng = random.Random(7)
    trials, below = 3000, 0
    for _ in range(trials):  # lognormal: median 1, mean above it
        xs = [rng.lognormvariate(0.0, 0.5) for _ in range(17)]
        below += pairstats.median_lower_bound(xs)[0] <= 1.0
    assert below / trials >= 0.94  # the bound's own coverage is 97.5 % at n = 17


def test_verdicts_against_a_floor_and_a_band() -> None:
    rng = random.Random(3)

    def around(m: float, spread: float, n: int = 30) -> list[float]:
        return [m * rng.lognormvariate(0.0, spread) for _ in range(n)]

    assert pairstats.at_least_verdict(around(1.05, 0.02), 0.95) == MET
    assert pairstats.at_least_verdict(around(0.85, 0.02), 0.95) == BELOW
    assert pairstats.at_least_verdict(around(0.96, 0.3), 0.95) == UNDECIDED
    assert pairstats.at_least_verdict([2.0, 2.0, 2.0, 2.0], 0.95) == UNDECIDED  # too few
    assert pairstats.within_verdict(0.97, 1.02, (0.95, 1.05)) == WITHIN
    assert pairstats.within_verdict(1.06, 1.2, (0.95, 1.05)) == OUTSIDE
    assert pairstats.within_verdict(0.9, 1.02, (0.95, 1.05)) == UNDECIDED


def test_pairs_needed_grows_with_the_spread_and_is_none_on_the_bound() -> None:
    rng = random.Random(5)
    tight = [rng.lognormvariate(0.0, 0.05) for _ in range(10)]
    loose = [rng.lognormvariate(0.0, 0.3) for _ in range(10)]
    tight_n = pairstats.pairs_needed(tight, 10, 0.95)
    loose_n = pairstats.pairs_needed(loose, 10, 0.95)
    assert tight_n is not None and loose_n is not None and loose_n > tight_n >= 11
    assert pairstats.pairs_needed([0.95, 0.95, 0.95], 3, 0.95) is None


def test_the_schedule_balances_sides_and_runs_rounds_in_turn() -> None:
    plan = pairstats.schedule(["a", "b", "c"], 4, random.Random(1), ("bare", "labd"))
    assert len(plan) == 12
    for case in "abc":
        firsts = [side for c, side in plan if c == case]
        assert sorted(firsts) == ["bare", "bare", "labd", "labd"]
    rounds = [sorted(c for c, _ in plan[i : i + 3]) for i in range(0, 12, 3)]
    assert rounds == [["a", "b", "c"]] * 4


def _compare_pairs(ratio: float, n: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "bare": 1000.0,
            "compare": 1000.0 * ratio * rng.lognormvariate(0.0, 0.01),
            "bare_cpu_us": 2.0,
            "compare_cpu_us": 2.0,
            "first": "bare",
            "load": 1.0,
        }
        for _ in range(n)
    ]


def _bench(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compare_check_pools_saved_runs_and_judges_each_mechanism(tmp_path: Path) -> None:
    rng = random.Random(11)
    runs = []
    cases = [("queue", 1, 1.0), ("queue", 4, 1.01), ("pipe", 1, 0.8), ("pipe", 4, 0.8)]
    for i in range(2):  # each run alone has 2 pairs a case, 4 a mechanism: too few
        results = [
            {"kind": "case", "case": label, "counters": n, "pairs": _compare_pairs(r, 2, rng)}
            for label, n, r in cases
        ]
        runs.append(tmp_path / f"run{i}.json")
        runs[-1].write_text(json.dumps({"results": results}))
    one = _bench("compare_check.py", "--from", str(runs[0]), "--only", "queue")
    assert one.returncode == 3, one.stdout + one.stderr  # 4 pooled: no 95 % interval
    both = _bench("compare_check.py", "--from", str(runs[0]), "--from", str(runs[1]), "--json")
    assert both.returncode == 1, both.stderr  # pipe at 0.8: outside
    rows = {r["case"]: r for r in json.loads(both.stdout)["results"]}
    assert rows["queue (its 2 cases)"]["n"] == 8
    assert rows["queue (its 2 cases)"]["verdict"] == WITHIN
    assert rows["pipe (its 2 cases)"]["verdict"] == OUTSIDE
    assert rows["pipe"]["verdict"] == UNDECIDED  # a case alone: 4 pairs
    queue = _bench("compare_check.py", "--from", str(runs[0]), "--from", str(runs[1]))
    assert queue.returncode == 1 and "queue (its 2 cases)" in queue.stdout
    missing = _bench("compare_check.py", "--from", str(tmp_path / "nothing.json"))
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("compare_check.py: --from:")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_compare_check_fails_a_case_outside_under_a_pooled_row(tmp_path: Path) -> None:
    rng = random.Random(12)
    cases = [("queue", 1, 1.02), ("queue", 4, 0.8)]  # pooled: half at 1.02, half at 0.8
    results = [
        {"kind": "case", "case": label, "counters": n, "pairs": _compare_pairs(r, 10, rng)}
        for label, n, r in cases
    ]
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"results": results}))
    judged = _bench("compare_check.py", "--from", str(run), "--json")
    rows = {(r["case"], r["counters"]): r for r in json.loads(judged.stdout)["results"]}
    assert rows["queue (its 2 cases)", None]["verdict"] == UNDECIDED
    assert rows["queue", 4]["verdict"] == OUTSIDE
    assert judged.returncode == 1, judged.stderr


def test_redis_bench_judges_saved_runs_against_its_floor(tmp_path: Path) -> None:
    rng = random.Random(13)

    def case(label: str, ratio: float, n: int) -> dict[str, Any]:
        pairs = [
            {
                "bare": 2000.0,
                "labd": 2000.0 * ratio * rng.lognormvariate(0.0, 0.02),
                "bare_cpu_us": 100.0,
                "labd_cpu_us": 101.0,
                "first": "bare",
            }
            for _ in range(n)
        ]
        return {"case": label, "pairs": pairs}

    doc = {"machine": {"nproc": 2, "python": "3", "loadavg": [0.1]}, "counters": 2}
    doc |= {"mode": "alternating", "cases": [case("redis op=incr", 1.0, 4)]}
    small = tmp_path / "small.json"
    small.write_text(json.dumps(doc))
    few = _bench("redis_bench.py", "--from", str(small))
    assert few.returncode == 3, few.stderr  # 4 pairs: no bound at 95 %
    assert "undecided" in few.stdout
    doc["cases"] = [case("redis op=incr", 1.0, 12), case("redis op=watch", 0.8, 12)]
    big = tmp_path / "big.json"
    big.write_text(json.dumps(doc))
    done = _bench("redis_bench.py", "--from", str(small), "--from", str(big), "--json")
    assert done.returncode == 1, done.stderr
    cases = {c["case"]: c for c in json.loads(done.stdout)["cases"]}
    assert cases["redis op=incr"]["n"] == 16 and cases["redis op=incr"]["verdict"] == MET
    assert cases["redis op=watch"]["verdict"] == BELOW
