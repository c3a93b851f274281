"""The REPL end to end in a real terminal: ``labctl`` in a tmux pane, driven by keys.

Each test has its own tmux server (``tmux -L <unique name>``), killed at teardown, and its
own XDG directories, so no history or daemon of the user's is touched. Every wait polls
``capture-pane`` with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from helpers import Daemon, labctl_command, wait_for
from redis_server import RedisServer

pytestmark = pytest.mark.daemon

WAIT = 15.0


class Tmux:
    """One private tmux server; each ``open`` runs a command in a new 120x40 pane."""

    def __init__(self, env: dict[str, str]) -> None:
        self.name = f"ipclab-{uuid.uuid4().hex[:12]}"
        self.env = env
        self.started = False

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.name, *args],
            env=self.env, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        assert done.returncode == 0, f"tmux {' '.join(args[:2])}: {done.stderr.strip()}"
        return done.stdout

    def open(self, command: list[str], size: tuple[int, int] = (120, 40)) -> Pane:
        """A new pane running ``command`` under ``sh``, which prints its exit status when
        it ends (tmux itself sometimes misses the exit of a pane's process under load).

        The shell traps SIGINT (Ctrl-C reaches the whole foreground group), else it would
        leave when the command ends; a trapped signal is default again in the command.
        """
        script = 'trap : INT; "$@"; echo "[exited with $?]"; exec sleep 600'
        argv = ("sh", "-c", script, "sh", *command)
        show = ("-P", "-F", "#{pane_id}")
        if self.started:
            target = self.tmux("new-window", *show, "-t", "t:", *argv)  # session t
        else:
            self.started = True
            target = self.tmux(
                "new-session",
                "-d",
                "-x",
                str(size[0]),
                "-y",
                str(size[1]),
                "-s",
                "t",
                *show,
                *argv,
            )
        return Pane(self, target.strip())

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], env=self.env, capture_output=True, timeout=10
        )


class Pane:
    def __init__(self, tmux: Tmux, target: str) -> None:
        self.tmux = tmux
        self.target = target

    def keys(self, *keys: str) -> None:
        self.tmux.tmux("send-keys", "-t", self.target, *keys)

    def type(self, text: str) -> None:
        self.tmux.tmux("send-keys", "-t", self.target, "-l", text)

    def screen(self) -> str:
        return self.tmux.tmux("capture-pane", "-p", "-t", self.target)

    def joined(self) -> str:
        """The screen with wrapped lines joined: differs from screen() if a line wrapped."""
        return self.tmux.tmux("capture-pane", "-p", "-J", "-t", self.target)

    def lines(self) -> list[str]:
        return [line for line in self.screen().splitlines() if line.strip()]

    def wait_for(self, pattern: str, what: str | None = None) -> re.Match[str]:
        found: re.Match[str] | None = None

        def seen() -> bool:
            nonlocal found
            found = re.search(pattern, self.screen(), re.M)
            return found is not None

        try:
            wait_for(seen, WAIT, what or repr(pattern), every=0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- screen ---\n{self.screen()}") from None
        assert found is not None
        return found

    def prompt_last(self) -> bool:
        """Whether the last non-blank line is an empty prompt."""
        lines = self.lines()
        return bool(lines) and re.fullmatch(r"lab(@\S+)?>", lines[-1].strip()) is not None

    def exit_status(self) -> int:
        """Wait for the command to end; its exit status."""
        return int(self.wait_for(r"^\[exited with (\d+)\]$", "labctl to exit")[1])


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABCTL_", "TMUX"))}
    env.update(
        TERM="xterm-256color",
        TMUX_TMPDIR=str(tmp),  # the server's socket goes with the test's files
        XDG_STATE_HOME=str(tmp / "state"),
        XDG_RUNTIME_DIR=str(tmp / "run"),
    )
    (tmp / "run").mkdir(mode=0o700)
    return env


@pytest.fixture
def tmux_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return base_env(tmp_path_factory.mktemp("tx", numbered=True))


@pytest.fixture
def tmux(tmux_env: dict[str, str]) -> Iterator[Tmux]:
    server = Tmux(tmux_env)
    try:
        yield server
    finally:
        server.kill()


def test_repl_in_a_terminal(labd_daemon: Daemon, tmux: Tmux) -> None:
    tmux.env.update(PROMPT_TOOLKIT_NO_CPR="1", LABCTL_CONNECT=f"unix:{labd_daemon.socket}")
    pane = tmux.open(labctl_command())
    pane.wait_for(r"^lab>", "the first prompt")

    pane.type("spa")  # the history is empty: no suggestion shows after the cursor
    pane.keys("Tab")
    pane.wait_for(r"> spawn$", "spa completed to spawn")
    pane.type(" qu")
    pane.keys("Tab")
    pane.wait_for(r"> spawn queue$", "qu completed to queue")
    pane.type(" 3 interval=0.1")
    pane.keys("Enter")
    set_id = pane.wait_for(r"^started set (\d+): queue 3 interval=0\.1 ", "the new set's id")[1]
    pane.type("status")
    pane.keys("Enter")
    pane.wait_for(rf"^\s*{set_id}\s+queue 3 interval=0\.1\s+running\s", "the set in status")

    pane.type("watch")
    pane.keys("Enter")
    row = rf"^\s*{set_id}\s+queue 3 interval=0\.1\s+running\s+(\d+)\s"
    pane.wait_for(r"every 0\.1 s; q or Ctrl-C to stop")

    def watched() -> int:  # the last row: status's table stays above the view
        return int(re.findall(row, pane.screen(), re.M)[-1])

    first = watched()
    wait_for(lambda: watched() > first, WAIT, "watch to show a new value")
    pane.keys("C-c")
    wait_for(pane.prompt_last, WAIT, "the prompt after Ctrl-C")

    pane.type("stop all")
    pane.keys("Enter")
    pane.wait_for(rf"set {set_id} \(queue 3 interval=0\.1\) stopped")
    wait_for(pane.prompt_last, WAIT, "the prompt after stop")
    pane.keys("C-d")
    assert pane.exit_status() == 0


def test_toolbar_shows_live_figures_with_a_terminal_that_answers_cpr(
    labd_daemon: Daemon, tmux: Tmux
) -> None:
    """prompt_toolkit draws the bottom toolbar only once the terminal told it its height
    (cursor position report), so this test leaves CPR on: tmux answers it."""
    tmux.env.update(LABCTL_CONNECT=f"unix:{labd_daemon.socket}")
    pane = tmux.open(labctl_command())
    pane.wait_for(r"^lab>", "the first prompt")
    pane.type("spawn shared 2 interval=0.05")
    pane.keys("Enter")
    set_id = pane.wait_for(r"^started set (\d+): shared 2 interval=0\.05", "the new set's id")[1]
    toolbar = rf"^ #{set_id} shared 2 interval=0\.05 (\d+) lost \d+ [\d.k]+/s"
    first = int(pane.wait_for(toolbar, "the toolbar")[1])
    wait_for(lambda: int(pane.wait_for(toolbar)[1]) > first, WAIT, "the toolbar to refresh")
    pane.type("stop all")
    pane.keys("Enter")
    pane.wait_for(rf"set {set_id} \(shared 2 interval=0\.05\) stopped")
    pane.type("exit")
    pane.keys("Enter")
    assert pane.exit_status() == 0


def daemons_for(runtime_dir: str) -> list[psutil.Process]:
    """The labd processes started with this XDG_RUNTIME_DIR (not their children)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if "-m labd" in " ".join(cmd) and p.environ().get("XDG_RUNTIME_DIR") == runtime_dir:
                found.append(p)
        except (psutil.Error, IndexError):
            continue
    return found


@pytest.fixture
def autostarted(tmux_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """An environment with no daemon at the default socket; ends what labctl starts."""
    yield tmux_env
    for daemon in daemons_for(tmux_env["XDG_RUNTIME_DIR"]):
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except psutil.TimeoutExpired:
            daemon.kill()
            raise


def test_autostart_starts_one_labd_and_a_second_repl_reuses_it(
    autostarted: dict[str, str], tmux: Tmux
) -> None:
    tmux.env.update(PROMPT_TOOLKIT_NO_CPR="1")
    socket = f"{autostarted['XDG_RUNTIME_DIR']}/ipclab/labd.sock"
    first = tmux.open(labctl_command())
    pid = int(first.wait_for(r"started labd in the background \(pid (\d+)\)$", "autostart")[1])
    first.wait_for(r"^lab>", "the first prompt")
    assert f"at unix:{socket}\n" in first.joined()  # the greeting names the socket
    assert [p.pid for p in daemons_for(autostarted["XDG_RUNTIME_DIR"])] == [pid]

    second = tmux.open(labctl_command())
    second.wait_for(r"^lab>", "the second REPL's prompt")
    assert "started labd" not in second.screen()
    assert [p.pid for p in daemons_for(autostarted["XDG_RUNTIME_DIR"])] == [pid]
    history = Path(autostarted["XDG_STATE_HOME"]) / "ipclab" / "labctl_history"
    second.type("status")
    second.keys("Enter")
    second.wait_for(r"no sets", "status in the second REPL")
    assert "status" in history.read_text()
    for pane in (first, second):
        pane.keys("C-d")
        assert pane.exit_status() == 0


def ended(pid: int) -> bool:
    """Gone, or a zombie its parent (the labctl that started it) has not reaped yet."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def no_wrapped_line(pane: Pane) -> bool:
    """Nothing on the screen is wider than the terminal (tmux joins wrapped lines)."""
    return pane.screen().rstrip("\n").count("\n") == pane.joined().rstrip("\n").count("\n")


def test_status_watch_toolbar_and_prompt_fit_80_columns(labd_daemon: Daemon, tmux: Tmux) -> None:
    """At 80x24 status rows wrapped, watch lost its last columns, the toolbar was cut and
    the prompt alone was the whole socket path."""
    tmux.env.update(LABCTL_CONNECT=f"unix:{labd_daemon.socket}")
    pane = tmux.open(labctl_command(), size=(80, 24))
    pane.wait_for(r"^lab>", "the short prompt")
    for line in (
        "spawn shared 3 interval=0.05 name=racy",
        "spawn shared 3 interval=0.05 lock=yes name=locked",
        "spawn pipe 2 interval=0.05 shared_end=yes payload=8192",
    ):
        pane.keys("C-l")
        pane.type(line)
        pane.keys("Enter")
        pane.wait_for(r"^started set \d+", "the set started")
    pane.keys("C-l")
    pane.type("status")
    pane.keys("Enter")
    # the switches first: cut to fit, a row still tells the locked set from the racy one
    pane.wait_for(r"^\s*\d+\s+shared 3 lock=yes", "the locked variant in status")
    pane.wait_for(r"^\s*\d+\s+shared 3 interval=0\.0", "the racy one")
    pane.wait_for(r"IN FLIGHT\s+CORRUPT", "IN FLIGHT and CORRUPT for the pipe")
    pane.wait_for(r"^ #\d+ \"racy\" shared 3 interval=0\.\S* \d+\S* lost ", "the toolbar")
    assert no_wrapped_line(pane), pane.joined()

    pane.keys("C-l")
    pane.type("watch")
    pane.keys("Enter")
    pane.wait_for(r"q or Ctrl-C to stop", "the watch view")
    pane.wait_for(r"^\s*\d+\s+shared 3 lock=yes", "the variant in watch")
    pane.wait_for(r"\s+RATE\s*$", "the RATE column, the last one kept at 80 columns")
    assert no_wrapped_line(pane), pane.joined()
    pane.keys("q")
    pane.wait_for(r"^lab>\s*$", "the prompt after q")  # the toolbar is below it
    pane.type("stop all")
    pane.keys("Enter")
    pane.wait_for(r'set \d+ "locked" \(shared 3 lock=yes interval=0\.05\) stopped')
    pane.wait_for(r"^lab>\s*$", "the prompt after stop")
    pane.keys("C-d")
    assert pane.exit_status() == 0


def test_shutdown_in_the_repl_is_calm_and_labd_comes_back_only_saying_so(
    autostarted: dict[str, str], tmux: Tmux
) -> None:
    """shutdown printed an alarming lost-connection line and the next command silently
    started a new labd."""
    tmux.env.update(PROMPT_TOOLKIT_NO_CPR="1")
    pane = tmux.open(labctl_command(), size=(80, 24))
    first = int(pane.wait_for(r"started labd in the background \(pid (\d+)\)$", "autostart")[1])
    pane.wait_for(r"^lab>", "the prompt")
    pane.type("shutdown")
    pane.keys("Enter")
    pane.wait_for(r"is shutting down", "shutdown said")
    wait_for(lambda: ended(first), WAIT, "labd to end")
    pane.keys("Enter")  # an empty line: the poller had time to see labd gone
    wait_for(pane.prompt_last, WAIT, "the prompt after shutdown")
    assert "lost labd" not in pane.joined()
    pane.type("status")
    pane.keys("Enter")
    pane.wait_for(r"labd was shut down; starting a new one", "the restart said first")
    pane.wait_for(r"no sets", "status from the new labd")
    wait_for(pane.prompt_last, WAIT, "the prompt after status")
    pane.type("exit")
    pane.keys("Enter")
    assert pane.exit_status() == 0


def test_group_ids_complete_like_set_ids(
    labd_daemon: Daemon, tmux: Tmux, redis_server: RedisServer
) -> None:
    """A group spawned in the REPL (``--on``) is offered by Tab after stop, inspect and
    watch, from the poller's read of the user's group file."""
    tmux.env.update(
        PROMPT_TOOLKIT_NO_CPR="1",
        LABCTL_CONNECT=f"unix:{labd_daemon.socket}",
        XDG_CONFIG_HOME=str(Path(tmux.env["XDG_STATE_HOME"]).parent / "config"),
    )
    added = subprocess.run(
        [*labctl_command(), "context", "add", "lab1", "--connect", labd_daemon.socket],
        env=tmux.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    pane = tmux.open(labctl_command())
    pane.wait_for(r"^lab>", "the first prompt")
    pane.type(f"spawn redis 2 op=incr interval=0.05 url={redis_server.url} --on lab1")
    pane.keys("Enter")
    gid = pane.wait_for(r"^(g[0-9a-f]{6})$", "the group's id")[1]

    def tab_to(typed: str, what: str) -> None:
        pane.type(typed)
        done = rf"> {typed}{gid[len(typed.split()[-1]) :]}$"

        def completed() -> bool:  # the poller reads the group file twice a second
            if re.search(done, pane.screen(), re.M):
                return True
            pane.keys("Tab")
            return False

        wait_for(completed, WAIT, what, every=0.3)

    tab_to("inspect g", "inspect g completed to the group")
    pane.keys("Enter")
    pane.wait_for(rf"^group {gid}\s+redis 2", "the group inspected")
    tab_to("watch g", "watch g completed to the group")
    pane.keys("Enter")
    wait_for(  # watch draws on a cleared screen: the lines above are gone
        lambda: f"group {gid}" in pane.screen() and "> inspect" not in pane.screen(),
        WAIT,
        "the group watched",
    )
    pane.keys("C-c")
    wait_for(pane.prompt_last, WAIT, "the prompt after Ctrl-C")
    tab_to("stop g", "stop g completed to the group")
    pane.keys("Enter")
    pane.wait_for(rf"^group {gid} \(redis\) ", "the group stopped")
    wait_for(pane.prompt_last, WAIT, "the prompt after stop")
    pane.keys("C-d")
    assert pane.exit_status() == 0
    assert redis_server.keys() == []
