"""The REPL without a terminal: prompt_toolkit's pipe input and DummyOutput, a real labd.

Each test types whole lines (``\\r`` is Enter) into the REPL's :func:`labctl.repl.run`
and reads what the commands printed. The completer and the toolbar are tested directly
on a filled cache; the poller and reconnection against real daemons.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonkit import DaemonFactory
from helpers import Daemon, wait_for
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from labctl import repl
from labctl.cli import cli, run
from labctl.repl.cache import LiveCache, Snapshot
from labctl.repl.completion import LabCompleter
from labctl.repl.dispatch import MAX_LINE, dispatch
from labctl.repl.loop import forget_lost
from labctl.repl.poller import Pace, Poller
from labctl.repl.session import Terminal
from labctl.repl.toolbar import prompt_text, toolbar_text
from labctl.state import State
from labctl.target import Target
from labd import __version__
from labd.protocol import Address

FAST = Pace(interval=0.05, retry=0.05)
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"  # a terminal's bracketed paste


@pytest.fixture
def state(module_labd: Daemon) -> Iterator[State]:
    """A REPL session's state, aimed at the module's labd (never autostarting one)."""
    session = State(Target(Address(path=module_labd.socket)))
    yield session
    session.close()


def run_lines(state: State, typed: str, history: Path) -> int:
    """Type ``typed`` into a headless REPL and run it until it leaves."""
    with create_pipe_input() as keys:
        keys.send_text(typed)
        return repl.run(state, cli, terminal=Terminal(keys, DummyOutput(), history), pace=FAST)


# --- the loop, against a real labd -----------------------------------------------------
@pytest.mark.daemon
def test_spawn_then_status_run_through_the_same_grammar(
    state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_lines(state, "spawn queue 2 interval=0.1\rstatus\rstop all\rexit\r", tmp_path / "h")
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"labd {__version__} at unix:")  # connected before the first prompt
    set_id = re.search(r"^started set (\d+): queue 2 interval=0\.1 \(2 counters", out, re.M)
    assert set_id, out
    assert re.search(rf"^\s*{set_id[1]}\s+queue 2 interval=0\.1\s+(starting|running)", out, re.M)
    assert f"set {set_id[1]} (queue 2 interval=0.1) stopped" in out
    history = (tmp_path / "h").read_text()
    assert "+spawn queue 2 interval=0.1" in history and "+status" in history


@pytest.mark.daemon
def test_help_and_help_command(
    state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = "help\rhelp spawn\rhelp figures\rhelp exit\rquit\r"
    assert run_lines(state, lines, tmp_path / "h") == 0
    out = capsys.readouterr().out
    # the REPL's usage: no "labctl [OPTIONS]", no option the REPL refuses, no "repl"
    assert "Usage: labctl [OPTIONS]" not in out.split("Usage: labctl spawn")[0]
    assert "--connect" not in out and "--no-autostart" not in out
    assert not re.search(r"^\s+repl\s", out, re.M)
    assert "Commands:" in out and "spawn" in out and "Ctrl-D leaves" in out
    assert "help figures" in out
    assert "Usage: labctl spawn [OPTIONS] MECH N [KEY=VALUE]..." in out
    assert "exit: leave the REPL" in out
    wide = [line for line in out.splitlines() if len(line) > 80]
    assert not wide, f"wider than an 80-column terminal: {wide}"


@pytest.mark.daemon
def test_errors_are_one_line_and_the_loop_goes_on(
    state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = "spawn queue 2 " + "x=1 " * (MAX_LINE // 4)
    typed = (
        "spwan queue 2\r"  # a typo
        "echo 'unbalanced\r"  # quotes
        "stop\r"  # a missing argument
        "inspect 424242\r"  # the daemon says no
        f"{PASTE_START}{huge}{PASTE_END}\r"  # a paste gone wrong (bracketed, as terminals
        # send a paste: one insertion, not 8 KB of single keys to process and redraw)
        "spaw\x03"  # Ctrl-C cancels the line being typed
        "status --json\r"  # and the loop still runs commands
        "\x04"  # Ctrl-D leaves
    )
    assert run_lines(state, typed, tmp_path / "h") == 0
    captured = capsys.readouterr()
    errors = captured.err.splitlines()
    assert errors == [
        "labctl: no command 'spwan': did you mean spawn?",
        "labctl: cannot parse the line: no closing quotation (check the quotes)",
        "labctl: Missing argument 'ID... | all'. (see: labctl stop --help)",
        "labctl: no set 424242 (see: labctl status)",
        f"labctl: line too long ({len(huge)} characters, at most {MAX_LINE}): nothing run",
    ]
    assert captured.out.rstrip().endswith("]")  # status --json ran after all that


@pytest.mark.daemon
def test_dispatch_returns_codes_and_none_to_leave(
    state: State, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dispatch("", state, cli) == 0
    assert dispatch("   # a comment", state, cli) == 0
    assert dispatch("mechanisms", state, cli) == 0
    assert dispatch("labctl status", state, cli) == 0  # a pasted "labctl" is allowed
    assert dispatch("frobnicate", state, cli) == 2
    assert dispatch("tail notanumber", state, cli) == 2
    assert dispatch("--connect unix:/x status", state, cli) == 2  # fixed at start-up
    assert dispatch("exit", state, cli) is None
    assert dispatch("quit", state, cli) is None
    err = capsys.readouterr().err
    assert "labctl: no command 'frobnicate' (see: help)" in err
    assert "apply when labctl starts" in err


# --- completion, from a filled cache ---------------------------------------------------
MECHANISMS: tuple[dict[str, Any], ...] = (
    {
        "name": "shared",
        "summary": "a multiprocessing.Value",
        "params": [
            {"name": "lock", "type": "bool", "default": False, "help": "under the lock"},
            {"name": "interval", "type": "float", "default": 1.0, "help": "seconds"},
            {
                "name": "start_method",
                "type": "str",
                "default": "forkserver",
                "help": "how",
                "choices": ["forkserver", "spawn", "fork"],
            },
            {"name": "duration", "type": "float", "default": None, "nullable": True},
        ],
    },
    {"name": "queue", "summary": "a Queue", "params": [{"name": "maxsize", "type": "int"}]},
)
SETS = (
    {"id": 3, "mechanism": "queue", "state": "running"},
    {"id": 4, "mechanism": "shared", "state": "stopped"},
    {"id": 12, "mechanism": "shared", "state": "running"},
)


@pytest.fixture
def completer() -> LabCompleter:
    cache = LiveCache(Snapshot(connected=True, sets=SETS, mechanisms=MECHANISMS))
    return LabCompleter(cli, cache)


def complete(completer: LabCompleter, text: str) -> list[str]:
    """What Tab would offer at the end of ``text``, applied to the line."""
    event = CompleteEvent(completion_requested=True)
    found = completer.get_completions(Document(text), event)
    return [text[: len(text) + c.start_position] + c.text for c in found]


def test_command_names_come_from_the_click_group(completer: LabCompleter) -> None:
    names = complete(completer, "")
    assert {"spawn", "status", "stop", "inspect", "tail", "watch", "help", "exit"} <= set(names)
    assert complete(completer, "spa") == ["spawn"]
    assert complete(completer, "st") == ["status", "stop"]
    assert complete(completer, "help ins") == ["help inspect"]
    assert complete(completer, "status --j") == ["status --json"]


def test_mechanisms_then_their_parameters_then_their_values(completer: LabCompleter) -> None:
    assert complete(completer, "spawn qu") == ["spawn queue"]
    assert complete(completer, "spawn ") == ["spawn shared", "spawn queue"]
    assert complete(completer, "spawn shared ") == []  # N: nothing to offer
    assert complete(completer, "spawn shared 2 lo") == ["spawn shared 2 lock="]
    keys = complete(completer, "spawn shared 2 lock=yes ")
    assert "spawn shared 2 lock=yes interval=" in keys
    assert not any(k.endswith("lock=") for k in keys)  # each key once
    assert complete(completer, "spawn shared 2 lock=") == [
        "spawn shared 2 lock=yes",
        "spawn shared 2 lock=no",
    ]
    assert complete(completer, "spawn shared 2 start_method=f") == [
        "spawn shared 2 start_method=forkserver",
        "spawn shared 2 start_method=fork",
    ]
    assert complete(completer, "spawn shared 2 duration=") == ["spawn shared 2 duration=none"]
    assert complete(completer, "spawn queue 2 ") == ["spawn queue 2 maxsize="]
    assert complete(completer, "spawn nosuch 2 ") == []


def test_set_ids_after_the_commands_that_take_them(completer: LabCompleter) -> None:
    assert complete(completer, "stop ") == ["stop 3", "stop 12", "stop all"]  # live only
    assert complete(completer, "stop 3 ") == ["stop 3 12"]
    assert complete(completer, "stop 1") == ["stop 12"]
    assert complete(completer, "inspect ") == ["inspect 3", "inspect 4", "inspect 12"]
    assert complete(completer, "inspect 4 ") == []  # one id only
    assert complete(completer, "tail 1") == ["tail 12"]
    assert complete(completer, "watch 3 ") == ["watch 3 4", "watch 3 12"]
    assert complete(completer, "tail 3 -") == [
        "tail 3 -n",
        "tail 3 --lines",
        "tail 3 -f",
        "tail 3 --follow",
        "tail 3 --help",
    ]


def test_group_ids_after_the_commands_that_take_them() -> None:
    groups = (
        {"group": "g0a1b2c", "mechanism": "redis", "counters": 8, "contexts": ["lab1", "lab2"]},
        {"group": "g9f8e7d", "mechanism": "redis", "counters": 2, "contexts": ["local"]},
    )
    parts = (  # this labd holds a part of each: g9f8e7d's has ended
        {"id": 20, "mechanism": "redis", "state": "running", "params": {"group": "g0a1b2c:1/2"}},
        {"id": 21, "mechanism": "redis", "state": "stopped", "params": {"group": "g9f8e7d:1/1"}},
    )
    snap = Snapshot(connected=True, sets=parts, mechanisms=MECHANISMS, groups=groups)
    completer = LabCompleter(cli, LiveCache(snap))  # type: ignore[arg-type]
    assert complete(completer, "stop g") == ["stop g0a1b2c"]  # ended groups left out
    assert complete(completer, "stop ") == ["stop 20", "stop g0a1b2c", "stop all"]
    assert complete(completer, "inspect g") == ["inspect g0a1b2c", "inspect g9f8e7d"]
    assert complete(completer, "watch g9") == ["watch g9f8e7d"]
    assert complete(completer, "watch g9f8e7d ") == []  # watch takes one group
    assert complete(completer, "status g0a1b2c ") == ["status g0a1b2c g9f8e7d"]
    assert complete(completer, "stop 20 ") == []  # set ids and group ids do not mix
    assert complete(completer, "tail g") == []  # tail takes a set id only
    found = completer.get_completions(Document("stop g0"), CompleteEvent())
    assert [c.display_meta_text for c in found] == ["group: redis 8 on lab1,lab2"]


# --- toolbar and prompt ----------------------------------------------------------------
def text_of(fragments: Any) -> str:
    return "".join(text for _style, text, *_ in fragments)


def test_toolbar_shows_live_sets_and_the_connection() -> None:
    live = Snapshot(
        connected=True,
        sets=({"id": 3, "mechanism": "queue", "state": "running", "value": 120, "lost": 0,
               "rate": 19.9}, {"id": 4, "mechanism": "shared", "state": "stopped"}),
        updated=100.0,
    )  # fmt: skip
    assert text_of(toolbar_text(live, "unix:/s", now=100.5)) == " #3 queue 120 lost 0 19.9/s "
    named = Snapshot(connected=True, updated=100.0, sets=tuple(
        {"id": i, "name": "demo", "variant": "shared 10 lock=yes", "state": "running",
         "value": 892_145, "lost": 0, "rate": 14.9} for i in range(1, 9)))  # fmt: skip
    bar = text_of(toolbar_text(named, "unix:/s", now=100.5, width=80))
    assert len(bar) <= 80 and bar.startswith(' #1 "demo" shared 10 lock=yes 892k lost 0'), bar
    assert bar.endswith("more (watch)"), bar
    assert "stale 9s" in text_of(toolbar_text(live, "unix:/s", now=109.0))
    down = Snapshot(connected=False, problem="cannot reach labd at unix:/s")
    assert "DISCONNECTED from unix:/s" in text_of(toolbar_text(down, "unix:/s", now=0))
    idle = Snapshot(connected=True)
    assert "no running sets" in text_of(toolbar_text(idle, "unix:/s", now=0))
    assert text_of(prompt_text(live, "unix:/run/user/1000/ipclab/labd.sock")) == "lab> "
    assert text_of(prompt_text(live, "lab.example.org:18861")) == "lab@lab.example.org> "


# --- the poller and reconnection, against real daemons ---------------------------------
@pytest.mark.daemon
def test_poller_fills_the_cache_on_its_own_connection(module_labd: Daemon) -> None:
    cache = LiveCache()
    woken: list[int] = []
    poller = Poller(Target(Address(path=module_labd.socket)), cache, pace=FAST)
    poller.on_change = lambda: woken.append(1)
    poller.start()
    try:
        wait_for(lambda: cache.snapshot().updated, 10, "a first status()")
        snap = cache.snapshot()
        assert snap.connected
        assert {"shared", "manager", "queue", "pipe"} <= {m["name"] for m in snap.mechanisms}
        assert woken
    finally:
        poller.stop()


@pytest.mark.daemon
def test_labd_going_away_is_said_once_and_the_repl_reconnects(
    labd_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    first: Daemon = labd_factory()
    target = Target(Address(path=first.socket))
    state, cache = State(target), LiveCache(Snapshot(connected=True))
    said: list[str] = []
    poller = Poller(target, cache, pace=FAST, say=said.append)
    poller.start()
    try:
        assert dispatch("status", state, cli) == 0  # the state's own connection
        assert first.stop() == 0
        wait_for(lambda: not cache.snapshot().connected, 10, "the poller to notice")
        assert dispatch("help", state, cli) == 0  # help still works
        assert dispatch("status", State(target), cli) == 3  # one line: cannot reach labd
        labd_factory(root=first.root)  # labd is back, at the same socket
        wait_for(lambda: cache.snapshot().connected, 10, "the poller to reconnect")
        assert state.connected  # the old connection looks fine, but its daemon is gone
        assert forget_lost(state, cache, seen=0) == 1  # what the loop does before each line
        assert not state.connected
        assert dispatch("status", state, cli) == 0  # a new connection, no "connection lost"
    finally:
        poller.stop()
        state.close()
    assert said == [
        f"labctl: lost labd at unix:{first.socket}; reconnecting when it is back "
        "(help and exit still work)",
        f"labctl: connected to labd at unix:{first.socket}",
    ]
    assert "cannot reach labd" in capsys.readouterr().err


def test_the_one_shot_path_does_not_import_prompt_toolkit() -> None:
    code = "import sys, labctl.cli; sys.exit('prompt_toolkit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.daemon
def test_shutdown_lets_go_of_the_sessions_connection(labd_factory: DaemonFactory) -> None:
    """The next command connects anew (and says labd was shut down) even before the
    poller sees labd gone: on a busy host it used the dead connection ("lost")."""
    d = labd_factory(fakes=True)
    session = State(Target(Address(path=d.socket)), interactive=True)
    try:
        assert run(["status"], state=session) == 0 and session.connected
        assert run(["shutdown"], state=session) == 0
        assert not session.connected and session.shut_down
    finally:
        session.close()
    assert d.wait() == 0
