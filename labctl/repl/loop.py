"""The read-eval-print loop: prompt, run the line, go on, whatever happened.

The session's :class:`~labctl.state.State` holds the main thread's connection; the
poller holds its own. When the poller sees the daemon go, the state's client is closed
too, so the next command connects afresh (and, for the default local socket, starts a
labd if none answers, like a one-shot ``labctl``).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.patch_stdout import patch_stdout

from labctl.repl.cache import LiveCache
from labctl.repl.dispatch import dispatch
from labctl.repl.poller import Pace, Poller
from labctl.repl.session import Terminal, build_session
from labctl.state import State
from labd.errors import LabError

WELCOME = (
    "labd {version} at {address}\n"
    "help lists the commands, help figures the figures; Tab completes; Ctrl-D leaves."
)
DOWN = "labctl: the REPL is open and connects when labd answers (help and exit still work)"


def run(
    state: State,
    group: click.Group,
    *,
    terminal: Terminal | None = None,
    pace: Pace | None = None,
) -> int:
    """Run the REPL on ``group`` (the CLI's grammar) until exit, quit or Ctrl-D; return
    the exit code (0).

    ``terminal`` and ``pace`` are for tests. With no terminal given and stdin not a
    terminal, lines are read from stdin without a prompt (``labctl < script``).
    """
    state.interactive = True
    if terminal is None and not sys.stdin.isatty():
        return plain(state, group)
    cache = LiveCache()

    def expect_down() -> None:
        cache.update(expect_down=True)

    state.on_shutdown = expect_down
    poller = Poller(state.target, cache, pace=pace or Pace())
    if not greet(state, cache):
        poller.told_down()
    session = build_session(group, cache, str(state.target.address), terminal or Terminal())
    poller.on_change = session.app.invalidate
    poller.start()
    try:
        return loop(session, state, cache, group)
    finally:
        poller.stop()


def greet(state: State, cache: LiveCache) -> bool:
    """Connect now (so labd's autostart is reported before the first prompt) and say where."""
    try:
        info = state.client().version()
    except LabError as exc:
        click.echo(f"labctl: {exc.message}", err=True)
        click.echo(DOWN, err=True)
        return False
    cache.update(connected=True)
    click.echo(WELCOME.format(version=info.get("version", "?"), address=state.target.address))
    return True


def loop(session: PromptSession[str], state: State, cache: LiveCache, group: click.Group) -> int:
    """Prompt and dispatch until the user leaves; Ctrl-C only ever cancels."""
    seen = cache.snapshot().losses
    while True:
        try:
            with patch_stdout(raw=True):
                line = session.prompt()
            seen = forget_lost(state, cache, seen)
            with tidy_interrupts():
                if dispatch(line, state, group) is None:
                    return 0
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0


@contextmanager
def tidy_interrupts() -> Iterator[None]:
    """Erase the ``^C`` the terminal echoes when Ctrl-C stops a command (``tail -f``), so
    that the next prompt starts at the left margin, not after it."""
    if threading.current_thread() is not threading.main_thread() or not sys.stdout.isatty():
        yield
        return
    interrupted = False

    def note(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if interrupted:
            click.echo("\r\x1b[K", nl=False)


def forget_lost(state: State, cache: LiveCache, seen: int) -> int:
    """Close the state's client if the poller lost labd since ``seen``: it is dead too."""
    losses = cache.snapshot().losses
    if losses != seen:
        state.close()
    return losses


def plain(state: State, group: click.Group) -> int:
    """Lines from a pipe or a file, each through the grammar; the last failure's code."""
    code = 0
    for line in sys.stdin:
        result = dispatch(line.rstrip("\n"), state, group)
        if result is None:
            break
        code = result or code
    return code
