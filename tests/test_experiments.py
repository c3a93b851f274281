"""Experiments end to end: a real labd runs them, real labctl processes start, wait for,
cancel and render them (compare, experiments, report, history, plot, export)."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from daemonkit import DaemonFactory, Labctl, one_daemon
from helpers import Daemon, wait_for

pytestmark = pytest.mark.daemon

SHORT = ("--seconds", "0.5", "--warmup", "0.2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lab_daemon() -> Iterator[Daemon]:
    yield from one_daemon(fakes=True)


@pytest.fixture(scope="module")
def labctl(lab_daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> Labctl:
    return Labctl(lab_daemon, tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def two_cases(labctl: Labctl) -> dict[str, Any]:
    """One finished two-case experiment, shared by the rendering tests."""
    return labctl.json("compare", "shared", "shared:lock=yes", *SHORT, "--repeat", "2")  # type: ignore[no-any-return]


def fits(text: str, width: int = 80) -> None:
    wide = [line for line in text.splitlines() if len(line) > width]
    assert not wide, f"lines over {width} columns: {wide}"


def test_compare_json_has_version_stats_and_interleaved_runs(two_cases: dict[str, Any]) -> None:
    e = two_cases
    assert e["schema_version"] == 1
    assert e["state"] == "done"
    assert [c["case"] for c in e["cases"]] == ["shared", "shared:lock=yes"]
    assert len(e["runs"]) == 4 and all(r["state"] == "done" for r in e["runs"])
    rounds = [sorted(p for p, r in e["order"] if r == k) for k in (0, 1)]
    assert rounds == [[0, 1], [0, 1]]  # each round runs every case once
    locked = e["cases"][1]
    assert locked["lost_pct"] == 0.0  # under the lock nothing is lost
    assert locked["params"]["lock"] is True and locked["params"]["interval"] == 0.0
    for c in e["cases"]:
        assert c["runs"] == 2
        assert c["rate_min"] <= c["rate_median"] <= c["rate_max"]
        assert c["rate_median"] > 0 and c["cpu_us_per_inc"] > 0
    assert sum(1 for c in e["cases"] if c["best"]) == 1
    for r in e["runs"]:  # the window is measured, not taken from the 1 s samples
        assert 0.45 < r["window_s"] < 2.0
        assert r["rate"] == pytest.approx(r["attempted"] / r["window_s"], rel=0.01)
    m = e["machine"]
    assert m["cores"] >= 1 and m["python"] and m["start_method"] == "forkserver"
    assert m["load_before"] and m["load_after"]


def test_report_renders_table_csv_markdown(labctl: Labctl, two_cases: dict[str, Any]) -> None:
    exp = f"e{two_cases['id']}"
    text = labctl.run("report", exp).stdout
    fits(text)
    assert "CASE" in text and "VS BEST" in text and "shared:lock=yes" in text
    assert "machine:" in text and "best" in text and "rate, increments/s" in text
    rows = list(csv.DictReader(io.StringIO(labctl.run("report", exp, "--csv").stdout)))
    assert [r["case"] for r in rows] == ["shared", "shared:lock=yes"]
    assert float(rows[0]["rate_median"]) == two_cases["cases"][0]["rate_median"]
    md = labctl.run("report", exp, "--markdown").stdout
    assert "| case |" in md and "| shared:lock=yes |" in md and "machine:" in md
    again = labctl.json("report", exp)
    assert again["cases"] == two_cases["cases"]
    listed = labctl.json("experiments")
    assert any(x["id"] == two_cases["id"] and x["runs_done"] == 4 for x in listed)


def test_warmup_starts_once_every_counter_counts(labctl: Labctl) -> None:
    """Counters that take 1 s to begin (a worker's start on a loaded host) are not
    measured idle: the warm-up and the window wait until every one counts."""
    e = labctl.json(
        "compare", "fake:start_delay=1", "--counters", "2", "--seconds", "0.3",
        "--warmup", "0.1", "--repeat", "1",
    )  # fmt: skip
    run = e["runs"][0]
    assert run["state"] == "done" and run["attempted"] > 0, run
    assert run["rate"] == pytest.approx(run["attempted"] / run["window_s"], rel=0.01)


def test_report_plots_png_and_svg(
    labctl: Labctl, two_cases: dict[str, Any], tmp_path: Path
) -> None:
    png, svg = tmp_path / "r.png", tmp_path / "r.svg"
    exp = f"e{two_cases['id']}"
    labctl.run("report", exp, "--plot", str(png))
    labctl.run("report", exp, "--csv", "--plot", str(svg))
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_counters_grid_draws_a_line_chart(labctl: Labctl, tmp_path: Path) -> None:
    out = tmp_path / "grid.svg"
    done = labctl.run(
        "compare",
        "shared",
        "queue",
        "--counters",
        "1,2",
        *SHORT,
        "--repeat",
        "1",
        "--plot",
        str(out),
    )
    fits(done.stdout)
    assert "against counters" in done.stdout
    assert ET.parse(out).getroot().tag.endswith("svg")
    e = labctl.json("experiments", "--limit", "1")[0]
    full = labctl.json("report", f"e{e['id']}")
    points = {(c["case"], c["counters"]) for c in full["cases"]}
    assert points == {("shared", 1), ("shared", 2), ("queue", 1), ("queue", 2)}
    queue = [c for c in full["cases"] if c["case"] == "queue"]
    assert all(c["latency_p50_us"] is not None and c["latency_max_us"] for c in queue)
    lat = ("latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_max_us")
    for r in full["runs"]:  # a run carries the four figures a case has
        assert all(r.get(k) for k in lat) == (r["case"] == "queue"), r
    exp = f"e{e['id']}"
    rows = csv.DictReader(io.StringIO(labctl.run("export", exp, "--format", "csv").stdout))
    assert lat[1] in (rows.fieldnames or []) and lat[3] in (rows.fieldnames or [])
    assert all(all(r[k] for k in lat) for r in rows if r["case"] == "queue")
    md = labctl.run("report", exp, "--markdown").stdout.splitlines()
    head = next(line for line in md if line.startswith("| case |"))
    assert "| p50 us | p90 us | p99 us | max us |" in head
    q1 = next(line for line in md if line.startswith("| queue | 1 |"))
    cells = [x.strip() for x in q1.strip("|").split("|")]
    assert len(cells) == head.count("|") - 1, q1
    assert all(x[0].isdigit() for x in cells[6:10]), q1  # four figures, none missing


def test_history_plot_export(labctl: Labctl, two_cases: dict[str, Any], tmp_path: Path) -> None:
    rows = labctl.json("history", "--mechanism", "shared", "--limit", "50")
    ids = {r["set_id"] for r in two_cases["runs"]}
    assert ids <= {r["id"] for r in rows}
    assert all(r["mechanism"] == "shared" and r["state"] == "stopped" for r in rows)
    fits(labctl.run("history").stdout)
    # samples are stored once a second: a 0.7 s run may have none, so take one that has
    sampled = [
        i
        for i in sorted(ids)
        if json.loads(labctl.run("export", str(i), "--format", "json").stdout)["samples"]
    ]
    assert sampled, "none of the runs' sets has a stored sample"
    set_id = sampled[0]
    chart = labctl.run("plot", str(set_id)).stdout
    fits(chart)
    assert "attempted" in chart and "value" in chart and "lost" in chart
    out = tmp_path / "set.png"
    labctl.run("plot", str(set_id), "--out", str(out))
    assert out.read_bytes().startswith(PNG_MAGIC)
    samples = list(csv.DictReader(io.StringIO(labctl.run("export", str(set_id)).stdout)))
    assert samples and {"at", "value", "attempted", "lost"} <= set(samples[0])
    data = json.loads(labctl.run("export", str(set_id), "--format", "json").stdout)
    assert data["id"] == set_id and len(data["samples"]) == len(samples)
    exp = csv.DictReader(io.StringIO(labctl.run("export", f"e{two_cases['id']}").stdout))
    kinds = [r["kind"] for r in exp]
    assert kinds.count("run") == 4 and kinds.count("case") == 2


BAD = [
    (("compare", "nope"), "unknown mechanism 'nope'"),
    (("compare", "shared:colour=red"), "no parameter 'colour'"),
    (("compare", "shared", "--sweep", "payload=16,1024"), "has no parameter 'payload'"),
    (("compare", "shared", "--counters", "5000"), "limit of 4096 per set"),
    (("compare", "shared", "--seconds", "0.05"), "--seconds 0.05 is out of range"),
    (("compare", "shared", "--interval", "1", "--seconds", "2"), "too short a window"),
    (("compare", "shared:name=x"), "name cannot be set in a case"),
    (("compare", "shared", "--plot", "out.pdf"), "give a file ending in .png or .svg"),
    (("report", "e999"), "no experiment 999"),
    (("plot", "999"), "no set 999"),
    (("export", "e999"), "no experiment 999"),
]


@pytest.mark.parametrize(("args", "says"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line(labctl: Labctl, args: tuple[str, ...], says: str) -> None:
    done = labctl.run(*args, code=1)
    assert done.stderr.count("\n") == 1 and says in done.stderr
    assert done.stdout == ""


def test_grid_over_the_process_limit_says_how_many(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_factory(("--max-processes", "6"))
    done = Labctl(d, tmp_path).run("compare", "shared", "--counters", "1,8", code=1)
    assert "needs 9 processes" in done.stderr and done.stderr.count("\n") == 1


def test_plot_without_matplotlib_is_one_line(labctl: Labctl, tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": str(shim.parent)}
    no_plot = Labctl.__new__(Labctl)
    no_plot.address, no_plot.env = labctl.address, {**labctl.env, **env}
    done = no_plot.run("compare", "shared", "--plot", str(tmp_path / "x.png"), code=1)
    assert "pip install 'ipclab[plot]'" in done.stderr and done.stderr.count("\n") == 1


def _running(conn: Any, exp_id: int, done: int = 0) -> bool:
    e = json.loads(conn.root.experiment(exp_id))
    assert e["state"] in ("queued", "running"), e
    return bool(e["progress"]["run"]) and e["progress"]["done"] >= done


def _set_pids(conn: Any) -> set[int]:
    sets = json.loads(conn.root.status())  # one row each: inspect lists the processes
    return {p["pid"] for s in sets for p in json.loads(conn.root.inspect(s["id"]))["processes"]}


def _alive(pids: set[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


#: run a command with Ctrl-C's default action, as at a terminal: a test run started in
#: the background of a non-interactive shell ignores SIGINT, and so would labctl
AT_A_TERMINAL = (
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])",
)


def test_ctrl_c_cancels_in_labd_and_leaves_no_process(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_factory()
    labctl = Labctl(d, tmp_path)
    proc = subprocess.Popen(
        [
            *AT_A_TERMINAL,
            *labctl.command("compare", "shared", "queue", "--seconds", "5", "--repeat", "3"),
        ],
        env=labctl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    conn = d.connect()
    try:
        wait_for(lambda: json.loads(conn.root.experiments(1)), 20, "the experiment to be stored")
        exp_id = json.loads(conn.root.experiments(1))[0]["id"]
        wait_for(lambda: _running(conn, exp_id), 30, "the first run to start")
        wait_for(lambda: _set_pids(conn), 10, "the run's processes")
        pids = _set_pids(conn)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert f"experiment e{exp_id} cancelled" in err and "Traceback" not in err
        e = json.loads(conn.root.experiment(exp_id))
        assert e["state"] == "cancelled"
        live = [s for s in json.loads(conn.root.status()) if s["state"] not in ("stopped",)]
        assert live == []
        pids |= _set_pids(conn)
        wait_for(lambda: not _alive(pids), 10, "the experiment's workers to end")
    finally:
        conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_labd_killed_mid_experiment_marks_it_interrupted(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_factory()
    labctl = Labctl(d, tmp_path)
    started = labctl.run(
        "compare", "shared", "shared:lock=yes", *SHORT, "--repeat", "20", "--detach"
    ).stdout
    assert "runs in labd" in started
    conn = d.connect()
    exp_id = json.loads(conn.root.experiments(1))[0]["id"]
    wait_for(lambda: _running(conn, exp_id, done=2), 40, "two runs to finish")
    conn.close()
    d.send(signal.SIGKILL)
    d.wait()
    again = labd_factory(state_dir=d.state_dir)
    e = Labctl(again, tmp_path).json("report", f"e{exp_id}")
    assert e["state"] == "interrupted"
    kept = [r for r in e["runs"] if r["state"] == "done"]
    assert len(kept) >= 2 and all(r["rate"] > 0 for r in kept)
    assert any(r["state"] == "interrupted" for r in e["runs"])
    assert sum(c["runs"] for c in e["cases"]) == len(kept)
    # the factory checks that no process of the killed labd outlived it


def test_labd_stopped_mid_experiment_marks_it_interrupted(
    labd_factory: DaemonFactory, tmp_path: Path
) -> None:
    d = labd_factory()
    Labctl(d, tmp_path).run("compare", "queue", *SHORT, "--repeat", "20", "--detach")
    conn = d.connect()
    exp_id = json.loads(conn.root.experiments(1))[0]["id"]
    wait_for(lambda: _running(conn, exp_id, done=1), 40, "a run to finish")
    conn.close()
    assert d.stop(signal.SIGTERM) == 0  # the run under way is stopped in order first
    e = Labctl(labd_factory(state_dir=d.state_dir), tmp_path).json("report", f"e{exp_id}")
    assert e["state"] == "interrupted" and e["error"] == "labd stopped while it ran"
    assert [r["state"] for r in e["runs"]].count("done") >= 1
    assert e["runs"][-1]["state"] in ("cancelled", "done")
