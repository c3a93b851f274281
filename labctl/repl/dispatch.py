"""One REPL line through the one grammar: ``shlex.split``, then the same click group.

There is no second command table: the words the REPL adds (``help``, ``exit``, ``quit``)
are about the REPL itself, and everything else goes to :func:`labctl.invoke.invoke` with
the group the REPL was given (the CLI's, :data:`labctl.cli.cli`), which calls
``group.main(args, prog_name="labctl", standalone_mode=False, obj=state)`` and turns
every error into one line. Whatever happens, :func:`dispatch` returns: the loop goes on.
The REPL never imports :mod:`labctl.cli`: the grammar is handed to it.
"""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Sequence

import click

from labctl import figures
from labctl.invoke import fail, invoke
from labctl.state import State

MAX_LINE = 8192  # characters; a longer line is a paste gone wrong, not a command
LEAVE = ("exit", "quit")
HELP = "help"
REPL_HELP = """
help COMMAND shows a command's arguments; help figures, what each figure means.
Tab completes commands, mechanisms, parameters and set ids; Up and Ctrl-R
search the history; Ctrl-C cancels the line or a live view (watch, tail -f);
exit, quit or Ctrl-D leaves."""
NOT_IN_REPL = frozenset({"repl", HELP})  # the REPL's own help lists these not as commands


def dispatch(line: str, state: State, group: click.Group) -> int | None:
    """Run one line; return its exit code, or None when the user asks to leave."""
    if len(line) > MAX_LINE:
        return fail(f"line too long ({len(line)} characters, at most {MAX_LINE}): nothing run")
    try:
        args = shlex.split(line, comments=True)
    except ValueError as exc:
        return fail(f"cannot parse the line: {str(exc).lower()} (check the quotes)")
    if args[:1] == ["labctl"]:
        args = args[1:] or [HELP]
    if not args:
        return 0
    head = args[0]
    if head in LEAVE:
        return None
    if head == HELP:
        return show_help(args[1:], state, group)
    if not head.startswith("-") and head not in commands(group):
        return fail(unknown(head, commands(group)))
    return invoke(group, args, state)


def commands(group: click.Group) -> list[str]:
    """The group's visible command names (the one command table)."""
    return sorted(name for name, cmd in group.commands.items() if not cmd.hidden)


def unknown(name: str, names: Sequence[str]) -> str:
    """The one line for a word that is no command, with the closest one if any is close."""
    shown = name if len(name) <= 40 else name[:37] + "..."
    close = difflib.get_close_matches(name, [*names, HELP, *LEAVE], n=1, cutoff=0.6)
    if close:
        return f"no command {shown!r}: did you mean {close[0]}?"
    return f"no command {shown!r} (see: help)"


def show_help(words: Sequence[str], state: State, group: click.Group) -> int:
    """``help``: the group's help and the REPL's keys; ``help COMMAND``: that command's."""
    if not words:
        click.echo(repl_commands(group))
        click.echo(REPL_HELP)
        return 0
    name = words[0]
    if name == "figures":
        click.echo(figures.LEGEND)
        return 0
    if name in LEAVE:
        click.echo(f"{name}: leave the REPL (so does Ctrl-D)")
        return 0
    if name == HELP:
        click.echo("help [COMMAND]: the commands, or one command's arguments and options")
        return 0
    if name not in commands(group):
        return fail(unknown(name, commands(group)))
    return invoke(group, [name, "--help"], state)


def repl_commands(group: click.Group) -> str:
    """The commands as typed in the REPL: no ``labctl``, no options that apply only
    when labctl starts, no ``repl``."""
    names = [n for n in commands(group) if n not in NOT_IN_REPL]
    width = max(len(n) for n in names)
    lines = ["Commands:"]
    for name in names:
        short = group.commands[name].get_short_help_str(limit=78 - width - 4)
        lines.append(f"  {name.ljust(width)}  {short}")
    return "\n".join(lines)
