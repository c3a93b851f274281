"""The labctl grammar: one click group for the one-shot CLI and the REPL.

A one-shot ``labctl`` runs :func:`main`. The REPL runs each line through the same group,
with a :class:`~labctl.state.State` it keeps for the whole session::

    from labctl.cli import run
    code = run(shlex.split(line), state=state)   # never raises, never exits

Each command gets the client from ``ctx.obj`` (:func:`client_of`), calls one method and
hands the result to :mod:`labctl.render`. Arguments are checked by click types and
callbacks before the body runs, so a usage error never connects (nor starts labd).
Errors are one line on stderr, prefixed ``labctl:``; exit codes are 0 ok, 1 the daemon
said no, 2 usage, 3 cannot reach labd.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import click

from labctl import follow, group_cmds, render
from labctl import watch as live
from labctl.argtypes import ADDRESS, KEY_VALUE, params_dict, stop_ids
from labctl.client import Client
from labctl.context_cmds import context
from labctl.contexts import choose_target
from labctl.state import State
from labd.errors import EXIT_FAILED, LabError, UsageError, message_of
from labd.protocol import Address

EXIT_INTERRUPTED = 130
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """A :class:`LabError` on its way out through click, keeping its exit code."""

    def __init__(self, error: LabError) -> None:
        super().__init__(error.message)
        # per instance: click >= 8.5 declares exit_code a ClassVar
        setattr(self, "exit_code", error.exit_code)  # noqa: B010

    def show(self, file: Any = None) -> None:
        _fail(self.format_message(), self.exit_code)  # the same one line as run() prints


class LabGroup(click.Group):
    """A group that turns our errors into click's, so that click's own machinery (and
    ``CliRunner``) reports them with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabError as exc:
            raise Failure(exc) from exc


def client_of(ctx: click.Context, *, autostart: bool = True) -> Client:
    """The invocation's client, connected on first use (the only way commands get one)."""
    state = ctx.find_object(State)
    if state is None:
        raise RuntimeError("labctl commands run under the cli group, with a State in ctx.obj")
    return state.client(autostart=autostart)


def show(value: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print a result: one JSON document, or the text ``render`` makes of it."""
    click.echo(json.dumps(value, indent=2) if as_json else text(value))


GLOBAL_OPTIONS = ("connect", "tls_cert", "tls_key", "tls_ca", "no_autostart", "context_name")


@click.group(cls=LabGroup, invoke_without_command=True, context_settings=CONTEXT)
@click.option(
    "--connect",
    type=ADDRESS,
    envvar="LABCTL_CONNECT",
    metavar="ADDRESS",
    help="labd's address: unix:PATH, /abs/path or HOST:PORT (default: the local socket).",
)
@click.option("--tls-cert", envvar="LABCTL_TLS_CERT", metavar="FILE", help="Client certificate.")
@click.option("--tls-key", envvar="LABCTL_TLS_KEY", metavar="FILE", help="Client key.")
@click.option("--tls-ca", envvar="LABCTL_TLS_CA", metavar="FILE", help="CA of labd's certificate.")
@click.option(
    "--no-autostart", is_flag=True, help="Do not start labd when the local socket is silent."
)
@click.option(
    "--context",
    "context_name",
    envvar="LABCTL_CONTEXT",
    metavar="NAME",
    help="A named labd (see: labctl context list).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    connect: Address | None,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    no_autostart: bool,
    context_name: str | None,
) -> None:
    """Run and measure inter-process communication experiments with labd.

    With no command, opens the interactive REPL. Exit codes: 0 ok, 1 the command failed,
    2 usage error, 3 cannot reach labd.
    """
    if ctx.obj is None:
        try:
            target = choose_target(
                connect,
                (tls_cert, tls_key, tls_ca),
                context_name,
                no_autostart=no_autostart,
                current=ctx.invoked_subcommand != "context",
            )
        except UsageError as exc:
            raise click.UsageError(exc.message, ctx) from exc
        ctx.obj = State(target)
        ctx.call_on_close(ctx.obj.close)
    elif any(
        ctx.get_parameter_source(n) == click.core.ParameterSource.COMMANDLINE
        for n in GLOBAL_OPTIONS
    ):
        raise click.UsageError(
            "--connect, --context, --tls-* and --no-autostart apply when labctl starts"
        )
    if ctx.invoked_subcommand is None:
        open_repl(ctx)


def open_repl(ctx: click.Context) -> None:
    """Hand over to the REPL (``labctl.repl.run(state) -> exit code``)."""
    state: State = ctx.obj
    if state.interactive:
        click.echo(ctx.get_help())
        return
    try:
        repl_run = getattr(importlib.import_module("labctl.repl"), "run", None)
    except ModuleNotFoundError as exc:
        if exc.name != "labctl.repl":
            raise click.UsageError(f"the REPL needs {exc.name}: pip install 'ipclab'") from None
        repl_run = None
    if repl_run is None:
        raise click.UsageError("the REPL is not available yet: give a command")
    ctx.exit(repl_run(state))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def mechanisms(ctx: click.Context, as_json: bool) -> None:
    """Installed mechanisms and their parameters: KEY=DEFAULT  TYPE  HELP [ALLOWED]."""
    found = client_of(ctx).mechanisms()
    show(found, as_json, render.mechanisms)


SPAWN_HELP = """Start a set of N counter processes sharing a counter through MECH.

\b
KEY=VALUE pairs set the mechanism's parameters and the common ones
(interval, printers, duration, start_method, name); see: labctl mechanisms.
Prints the new set's id (with --json, its status object).

\b
Examples:
  labctl spawn queue 3
  labctl spawn shared 8 interval=0 lock=yes
  labctl spawn pipe 4 shared_end=yes payload=4096 duration=10
"""


@cli.command(help=SPAWN_HELP)
@click.argument("mechanism", metavar="MECH")
@click.argument("counters", metavar="N", type=int)
@click.argument(
    "params",
    metavar="[KEY=VALUE]...",
    nargs=-1,
    type=KEY_VALUE,
    callback=lambda ctx, param, pairs: params_dict(pairs),
)
@click.option("--json", "as_json", is_flag=True, help="Print the status object as JSON.")
@click.option(
    "--on",
    metavar="CTX1,CTX2",
    help="Spread the counters over these contexts as one group; prints the group's id.",
)
@click.pass_context
def spawn(
    ctx: click.Context,
    mechanism: str,
    counters: int,
    params: dict[str, str],
    as_json: bool,
    on: str | None,
) -> None:
    if on is not None:
        return group_cmds.spawn_on(mechanism, counters, params, on, as_json)
    created = client_of(ctx).spawn(mechanism, counters, params)
    show(created, as_json, lambda record: str(record.get("id")))


@cli.command()
@click.argument("items", metavar="[ID|GROUP]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option("--all-contexts", is_flag=True, help="Every context's sets, with a CONTEXT column.")
@click.pass_context
def status(ctx: click.Context, items: tuple[str, ...], as_json: bool, all_contexts: bool) -> None:
    """One row per set: running ones and those ended since labd started.

    Give ids to see only those sets, or group ids (spawn --on) to see groups.
    """
    ids, gids = group_cmds.split_ids(items)
    group_cmds.only_groups(gids, ids, "status")
    if all_contexts:
        return group_cmds.all_contexts(as_json)
    if gids:
        return group_cmds.status(gids, as_json)
    sets = client_of(ctx).status(ids)
    show(sets, as_json, render.status_table)


@cli.command()
@click.argument("item", metavar="ID|GROUP")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def inspect(ctx: click.Context, item: str, as_json: bool) -> None:
    """A set in full: parameters, metrics, processes, events (also for finished sets)."""
    ids, gids = group_cmds.split_ids([item])
    if gids:
        return group_cmds.inspect(gids[0], as_json)
    (set_id,) = ids
    found = client_of(ctx).inspect(set_id)
    show(found, as_json, render.inspect)


@cli.command()
@click.argument(
    "ids",
    metavar="ID... | all",
    nargs=-1,
    required=True,
    callback=lambda ctx, param, items: stop_ids(items),
)
@click.option("--json", "as_json", is_flag=True, help="The final status objects as JSON.")
@click.pass_context
def stop(ctx: click.Context, ids: tuple[int | str, ...] | Literal["all"], as_json: bool) -> None:
    """Stop sets and wait until they are stopped: stop 3 4, or stop all (or a group id).

    Prints each set's final value, attempted increments and lost updates.
    """
    if ids != "all" and any(isinstance(i, str) for i in ids):
        gids = [i for i in ids if isinstance(i, str)]
        group_cmds.only_groups(gids, [i for i in ids if isinstance(i, int)], "stop")
        return group_cmds.stop(gids, as_json)
    final = client_of(ctx).stop(ids)  # type: ignore[arg-type]  # group ids went above
    show(final, as_json, render.stopped)


@cli.command()
@click.argument("set_id", metavar="ID", type=int)
@click.option(
    "-n",
    "--lines",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the last lines to print.",
)
@click.option(
    "-f", "--follow", "keep", is_flag=True, help="Keep printing new lines until the set ends."
)
@click.pass_context
def tail(ctx: click.Context, set_id: int, lines: int, keep: bool) -> None:
    """The printers' output (the lesson's "Time: N" lines)."""
    follow.tail(client_of(ctx), set_id, lines, follow=keep, out=_write)


@cli.command()
@click.argument("items", metavar="[ID]... | GROUP", nargs=-1)
@click.pass_context
def watch(ctx: click.Context, items: tuple[str, ...]) -> None:
    """Live figures (value, lost, in flight, rate, latency, processes alive, a rate
    sparkline), redrawn 10 times a second until Ctrl-C or q.

    When stdout is not a terminal, prints one table a second instead.
    """
    ids, gids = group_cmds.split_ids(items)
    if gids:
        if ids or len(gids) > 1:
            raise click.UsageError("watch takes set ids, or one group id")
        return group_cmds.watch(gids[0])
    live.watch_live(client_of(ctx), ids, out=_write, tty=sys.stdout.isatty())


@cli.command()
@click.pass_context
def repl(ctx: click.Context) -> None:
    """Open the interactive REPL (the same as labctl with no command)."""
    open_repl(ctx)


@cli.command()
@click.pass_context
def shutdown(ctx: click.Context) -> None:
    """Stop every set and then labd itself."""
    client = client_of(ctx, autostart=False)
    client.shutdown()
    click.echo(f"labd at {client.address} is shutting down")


cli.add_command(context)


def _write(text: str) -> None:
    click.echo(text, nl=False)


def _usage_line(exc: click.UsageError) -> str:
    message = exc.format_message()
    if exc.ctx is None or "(see:" in message:
        return message
    return f"{message} (see: {exc.ctx.command_path} --help)"


def run(args: Sequence[str] | None = None, *, state: State | None = None) -> int:
    """Run one command line through the group; return its exit code, never raise.

    ``state`` is the REPL's session state (``None``: build one from the global options).
    """
    words = list(args) if args is not None else sys.argv[1:]
    for word in words:
        if not _is_text(word):
            raw = word.encode("utf-8", "surrogateescape")
            return _fail(f"an argument is not UTF-8 text: {raw!r}", 2)
    try:
        result = cli.main(
            args=words,
            prog_name="labctl",
            standalone_mode=False,
            obj=state,
        )
    except click.UsageError as exc:
        return _fail(_usage_line(exc), exc.exit_code)
    except click.ClickException as exc:
        return _fail(exc.format_message(), exc.exit_code)
    except click.Abort:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except LabError as exc:
        return _fail(exc.message, exc.exit_code)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except Exception as exc:
        if os.environ.get("LABCTL_DEBUG"):
            raise
        return _fail(f"internal error: {type(exc).__name__}: {message_of(exc)}", EXIT_FAILED)
    return result if isinstance(result, int) else 0


def _fail(message: str, code: int) -> int:
    """One line on stderr, whatever the message quotes (control characters escaped)."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())
    click.echo(f"labctl: {line}", err=True)
    return code


def _is_text(word: str) -> bool:
    """False for argv bytes that are not UTF-8 (Python decodes them to lone surrogates)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def main() -> None:
    """The ``labctl`` console script."""
    sys.exit(run())


__all__ = ["State", "cli", "client_of", "main", "run"]
