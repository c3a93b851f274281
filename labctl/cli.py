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
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import click

from labctl import figures, follow, group_cmds, render
from labctl import watch as live
from labctl.argtypes import ADDRESS, KEY_VALUE, params_dict, stop_ids
from labctl.client import Client
from labctl.context_cmds import context
from labctl.contexts import choose_target
from labctl.experiments import COMMANDS as EXPERIMENT_COMMANDS
from labctl.invoke import LabGroup, invoke
from labctl.state import State
from labd.errors import UsageError
from labd.protocol import Address

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


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
@click.version_option(package_name="ipclab", prog_name="labctl", message="%(prog)s %(version)s")
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
    """Hand over to the REPL (``labctl.repl.run(state, group) -> exit code``)."""
    state: State = ctx.obj
    if state.interactive:
        click.echo(ctx.get_help())
        return
    try:  # prompt_toolkit is imported here only, never for one command
        repl_run = getattr(importlib.import_module("labctl.repl"), "run", None)
    except ModuleNotFoundError as exc:
        if exc.name != "labctl.repl":
            raise click.UsageError(f"the REPL needs {exc.name}: pip install 'ipclab'") from None
        repl_run = None
    if repl_run is None:
        raise click.UsageError("the REPL is not available yet: give a command")
    ctx.exit(repl_run(state, cli))


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
Says the new set's id and what it is (with --json, its status object).

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
    for warning in created.get("warnings") or ():
        click.echo(f"labctl: warning: {warning}", err=True)
    show(created, as_json, render.spawned)


@cli.command()
@click.argument("items", metavar="[ID|GROUP]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.option(
    "--processes", "each", is_flag=True, help="Each set's processes too (one inspect per set)."
)
@click.option("--all-contexts", is_flag=True, help="Every context's sets, with a CONTEXT column.")
@click.pass_context
def status(
    ctx: click.Context, items: tuple[str, ...], as_json: bool, each: bool, all_contexts: bool
) -> None:
    """One row per set: running ones and those ended since labd started.

    Give ids to see only those sets, or group ids (spawn --on) to see groups. What each
    figure means: help figures.
    """
    ids, gids = group_cmds.split_ids(items)
    group_cmds.only_groups(gids, ids, "status")
    if all_contexts:
        return group_cmds.all_contexts(as_json)
    if gids:
        return group_cmds.status(gids, as_json)
    client = client_of(ctx)
    sets = client.status(ids)
    if each:
        listed = [{**s, "processes": client.inspect(s["id"])["processes"]} for s in sets]
        show(listed, as_json, lambda found: render.status_with_processes(found, figures.width()))
    else:
        show(sets, as_json, lambda found: render.status_table(found, figures.width()))
    for line in render.daemon_warnings(client.version()):
        click.echo(line, err=True)


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
@click.argument("set_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def explain(ctx: click.Context, set_id: int, as_json: bool) -> None:
    """The story of a set: attempted, value, lost and why; with trace=yes, each lost
    update (who read what, who overwrote whom) on a timeline."""
    from labctl import explain as story

    found = client_of(ctx).explain(set_id)
    show(found, as_json, story.render)


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
@click.argument("step", metavar="[STEP]", required=False)
@click.option("--list", "as_list", is_flag=True, help="List the steps.")
@click.option("--auto", is_flag=True, help="Do not wait for Enter between steps.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: each step's result.")
@click.pass_context
def lesson(ctx: click.Context, step: str | None, as_list: bool, auto: bool, as_json: bool) -> None:
    """A guided tour of the lesson's sections with real sets: each step's claim, its
    live figures, and the verdict with the numbers measured here."""
    from labctl import lesson as tour

    if as_list:
        click.echo(tour.listing())
        return
    if step is not None and step not in tour.NAMES:
        raise click.UsageError(f"no step {step!r} (steps: {', '.join(tour.NAMES)})")
    names = [step] if step else list(tour.NAMES)
    out = None if as_json else click.echo
    results = tour.tour(client_of(ctx), names, out=out, pause=not (auto or as_json))
    if as_json:
        click.echo(json.dumps(results, indent=2))


@cli.command(name="help")
@click.argument("topic", metavar="[COMMAND | figures]", required=False)
@click.pass_context
def help_(ctx: click.Context, topic: str | None) -> None:
    """The commands, one command's help, or what each figure means (help figures)."""
    group = ctx.parent.command if ctx.parent else cli
    if topic == "figures":
        click.echo(figures.LEGEND)
    elif topic is None:
        click.echo(ctx.parent.get_help() if ctx.parent else cli.get_help(ctx))
    elif isinstance(group, click.Group) and topic in group.commands:
        cmd = group.commands[topic]
        with click.Context(cmd, info_name=topic, parent=ctx.parent) as sub:
            click.echo(cmd.get_help(sub))
    else:
        raise click.UsageError(f"no command or topic {topic!r} (see: labctl help)")


@cli.command()
@click.pass_context
def shutdown(ctx: click.Context) -> None:
    """Stop every set and then labd itself."""
    client = client_of(ctx, autostart=False)
    state = ctx.find_object(State)
    if state is not None:
        state.shut_down = True
        state.on_shutdown()
    client.shutdown()
    click.echo(f"labd is shutting down (at {client.address})")
    if state is not None:
        state.close()  # labd is going: the next command connects afresh, and says so
    if state is not None and state.interactive:
        click.echo("the REPL stays open: exit leaves; a command starts a new labd (and says so)")


for _command in EXPERIMENT_COMMANDS:  # compare, experiments, report, history, plot, export
    cli.add_command(_command)


cli.add_command(context)


def _write(text: str) -> None:
    click.echo(text, nl=False)


def run(args: Sequence[str] | None = None, *, state: State | None = None) -> int:
    """Run one command line through the group; return its exit code, never raise.

    ``state`` is the REPL's session state (``None``: build one from the global options).
    """
    return invoke(cli, sys.argv[1:] if args is None else args, state)


def main() -> None:
    """The ``labctl`` console script."""
    sys.exit(run())


__all__ = ["State", "cli", "client_of", "main", "run"]
