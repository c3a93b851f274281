"""The lab's science: compare, experiments, report, history, plot, export.

Experiments run inside labd (a client that goes away loses nothing); these commands
start them, wait with a progress bar, and render stored results. Experiment ids are
written ``e7`` (``7`` is accepted where only an experiment can be meant); in
``export``, ``7`` is set 7 and ``e7`` experiment 7. Rendering and plotting modules are
imported inside the commands, so ``labctl status`` does not pay for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from labctl.client import Client
from labctl.state import State
from labd.errors import LabError, UsageError
from labd.protocol import FIGURE_KEYS

EXIT_CANCELLED = 130


def _client(ctx: click.Context) -> Callable[[], Client]:
    state = ctx.find_object(State)
    if state is None:
        raise RuntimeError("labctl commands run under the cli group, with a State in ctx.obj")
    return lambda: state.client()


def _counts(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers, e.g. 1,2,4,8") from None
    if not counts:
        raise click.BadParameter("give at least one number, e.g. 1,2,4,8")
    return counts


class ObjectId(click.ParamType[tuple[str, int], object]):
    """``7`` or ``e7``: (kind, id), kind "set" or "experiment"."""

    name = "id"

    def __init__(self, default_kind: str) -> None:
        self.default_kind = default_kind

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        text = str(value).strip().lower()
        kind = "experiment" if text.startswith("e") else self.default_kind
        digits = text[1:] if text.startswith("e") else text
        if not digits.isdigit() or int(digits) < 1:
            self.fail(f"{value!r} is not an id (7 for a set, e7 for an experiment)", param, ctx)
        return kind, int(digits)


def format_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--markdown", "fmt", flag_value="markdown", help="A Markdown table.")(f)
    f = click.option("--csv", "fmt", flag_value="csv", help="One CSV row per case.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="One JSON document.")(f)
    return click.option(
        "--plot", "plot_file", metavar="FILE", help="Also write the charts to a .png or .svg."
    )(f)


def emit(e: dict[str, Any], fmt: str | None, plot_file: str | None) -> None:
    from labctl import report

    if fmt == "json":
        click.echo(json.dumps(e, indent=2))
    elif fmt == "csv":
        click.echo(report.cases_csv(e))
    elif fmt == "markdown":
        click.echo(report.markdown(e))
    else:
        click.echo(report.text(e))
    if plot_file:
        from labctl import plotfile

        plotfile.experiment(e, plot_file)
        click.echo(f"wrote {plot_file}", err=True)


def wait(ctx: click.Context, client: Callable[[], Client], exp_id: int) -> dict[str, Any]:
    """The experiment once it ends; Ctrl-C cancels it in labd and exits 130."""
    from labctl import progress

    try:
        return progress.follow(client, exp_id)
    except KeyboardInterrupt:
        e = progress.cancel(client, exp_id)
    done = e["progress"]["done"]
    click.echo(
        f"labctl: experiment e{exp_id} {e['state']}: its {done} finished run(s) are kept "
        f"(labctl report e{exp_id})",
        err=True,
    )
    ctx.exit(EXIT_CANCELLED)


COMPARE_HELP = """Run the same experiment on each CASE inside labd, interleaved, then show a
table and a chart. The experiment is stored: see labctl experiments, labctl report.

\b
A CASE is MECH or MECH:KEY=VALUE,...; none means the lesson's six:
shared, shared:lock=yes, manager, manager:lock=yes, queue, pipe.
Ctrl-C cancels the experiment in labd; --detach leaves it running.

\b
Examples:
  labctl compare shared shared:lock=yes --counters 1,4
  labctl compare queue pipe --sweep payload=16,1024,65536 --markdown
"""


@click.command(help=COMPARE_HELP)
@click.argument("cases", metavar="[CASE]...", nargs=-1)
@click.option("--counters", default="1", metavar="N,..", callback=_counts, help="Counters (1).")
@click.option("--sweep", metavar="KEY=V1,V2,..", help="Run each case at each value of KEY.")
@click.option("--seconds", type=float, default=2.0, show_default=True, help="Measured window.")
@click.option("--warmup", type=float, default=0.5, show_default=True, help="Discarded start.")
@click.option("--repeat", type=int, default=3, show_default=True, help="Runs per case.")
@click.option("--interval", type=float, default=0.0, show_default=True, help="0 = flat out.")
@click.option("--seed", type=int, help="Seed of the shuffled run order (recorded).")
@format_options
@click.option("--detach", is_flag=True, help="Start it and return; labd keeps running it.")
@click.pass_context
def compare(
    ctx: click.Context,
    /,
    cases: tuple[str, ...],
    fmt: str | None,
    plot_file: str | None,
    detach: bool,
    **options: Any,
) -> None:
    if plot_file:
        from labctl import plotfile

        plotfile.check(plot_file)
    client = _client(ctx)
    spec = {"cases": list(cases), **{k: v for k, v in options.items() if v is not None}}
    e = client().compare(spec)
    if detach:
        runs = e["progress"]["runs"]
        click.echo(f"experiment e{e['id']} runs in labd ({runs} runs): labctl report e{e['id']}")
        return
    e = wait(ctx, client, e["id"])
    emit(e, fmt, plot_file)
    if e["state"] != "done":
        raise LabError(f"experiment e{e['id']} {e['state']}: {e.get('error') or ''}".rstrip(": "))


@click.command(name="experiments")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def experiments_command(ctx: click.Context, limit: int, as_json: bool) -> None:
    """Past experiments, newest first."""
    from labctl import report

    items = _client(ctx)().experiments(limit)
    click.echo(json.dumps(items, indent=2) if as_json else report.experiments_table(items))


@click.command()
@click.argument("exp", metavar="EXP", type=ObjectId("experiment"))
@format_options
@click.pass_context
def report(
    ctx: click.Context, exp: tuple[str, int], fmt: str | None, plot_file: str | None
) -> None:
    """A stored experiment (e7, or 7), rendered again."""
    if exp[0] != "experiment":
        raise UsageError("report takes an experiment id (e7)")
    if plot_file:
        from labctl import plotfile

        plotfile.check(plot_file)
    emit(_client(ctx)().experiment(exp[1]), fmt, plot_file)


@click.command()
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--mechanism", metavar="M", help="Only the sets of this mechanism.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_context
def history(ctx: click.Context, limit: int, mechanism: str | None, as_json: bool) -> None:
    """Finished sets, newest first (from labd's history store)."""
    from labctl import report

    rows = _client(ctx)().history(limit, mechanism)
    click.echo(json.dumps(rows, indent=2) if as_json else report.history_table(rows))


@click.command()
@click.argument("set_id", metavar="ID", type=int)
@click.option("--out", "out_file", metavar="FILE", help="Write a .png or .svg instead.")
@click.pass_context
def plot(ctx: click.Context, set_id: int, out_file: str | None) -> None:
    """Value, attempted and lost of a set over time, from its stored samples."""
    from labctl import plotfile, setchart

    if out_file:
        plotfile.check(out_file)
    data = _client(ctx)().samples(set_id)
    if not data["samples"]:
        raise LabError(f"set {set_id} has no stored samples (it ran less than a second?)")
    if out_file:
        plotfile.samples(data, out_file)
        click.echo(f"wrote {out_file}", err=True)
    else:
        click.echo(setchart.chart(data))


@click.command()
@click.argument("target", metavar="ID", type=ObjectId("set"))
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True
)
@click.pass_context
def export(ctx: click.Context, target: tuple[str, int], fmt: str) -> None:
    """A set's samples (ID), or an experiment's results (eID: a row per run and per case)."""
    from labctl import report

    kind, ident = target
    if kind == "experiment":
        e = _client(ctx)().experiment(ident)
        click.echo(json.dumps(e, indent=2) if fmt == "json" else report.experiment_csv(e))
        return
    data = _client(ctx)().samples(ident)
    rows = data["samples"]
    click.echo(json.dumps(data, indent=2) if fmt == "json" else report.csv_text(rows, SAMPLES))


SAMPLES = ("at", *FIGURE_KEYS)
COMMANDS = (compare, experiments_command, report, history, plot, export)
