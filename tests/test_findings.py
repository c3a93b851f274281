"""The issue's smaller findings, each as it was found: a limit printed as 1.04858e+06,
the start_method=fork warning reaching only labd's log, inspect's attempted against its
per_counter, and the lesson and the legend in the REPL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rpyc
from helpers import Daemon, wait_for
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from labctl import repl
from labctl.cli import cli
from labctl.repl.poller import Pace
from labctl.repl.session import Terminal
from labctl.state import State
from labctl.target import Target
from labd.errors import ParamError
from labd.params import PAYLOAD
from labd.protocol import Address


def test_a_limit_is_printed_as_an_integer() -> None:
    with pytest.raises(ParamError) as refused:
        PAYLOAD.parse("2000000")
    assert "maximum 1048576" in str(refused.value) and "e+06" not in str(refused.value)


@pytest.fixture
def rpc(module_rpc: rpyc.Connection) -> Iterator[rpyc.Connection]:
    yield module_rpc


@pytest.mark.daemon
def test_the_fork_warning_reaches_the_client(rpc: rpyc.Connection) -> None:
    started = json.loads(rpc.root.spawn("fake", 1, json.dumps({"start_method": "fork"})))
    try:
        assert any("start_method=fork" in w for w in started["warnings"]), started
    finally:
        rpc.root.stop((started["id"],))
    quiet = json.loads(rpc.root.spawn("fake", 1, "{}"))
    rpc.root.stop((quiet["id"],))
    assert quiet["warnings"] == []


@pytest.mark.daemon
def test_inspect_attempted_is_the_sum_of_per_counter_while_it_runs(
    rpc: rpyc.Connection,
) -> None:
    """One inspect --json showed attempted 26 with per_counter summing to 28: they were
    two reads. Flat out, every read differs: they must be one."""
    sid = json.loads(rpc.root.spawn("shared", 4, json.dumps({"interval": 0})))["id"]
    try:
        wait_for(
            lambda: json.loads(rpc.root.status((sid,)))[0]["attempted"] > 10_000, 20, "counting"
        )
        for _ in range(20):
            found = json.loads(rpc.root.inspect(sid))
            assert sum(found["per_counter"]) == found["attempted"], found
            assert found["sampled_at"] is not None
    finally:
        rpc.root.stop((sid,))


@pytest.mark.daemon
def test_the_lesson_and_the_legend_in_the_repl(
    module_labd: Daemon, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = State(Target(Address(path=module_labd.socket)))
    try:
        with create_pipe_input() as keys:
            keys.send_text("lesson --list\rhelp figures\rexit\r")
            terminal = Terminal(keys, DummyOutput(), tmp_path / "h")
            code = repl.run(state, cli, terminal=terminal, pace=Pace(0.05, 0.05))
    finally:
        state.close()
    out = capsys.readouterr().out
    assert code == 0
    assert "2. race     Ten counters racing" in out
    assert "IN FLIGHT" in out and "CORRUPT" in out and "ATTEMPTED" in out
