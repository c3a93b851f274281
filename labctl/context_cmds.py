"""``labctl context add|list|use|rm``: the user's named labds (see labctl.contexts)."""

from __future__ import annotations

import json

import click

from labctl.argtypes import ADDRESS
from labctl.contexts import LOCAL, Context, Contexts, absolute
from labctl.table import table
from labd.protocol import Address


@click.group()
def context() -> None:
    """Named labd addresses: add, list, use, rm; then --context NAME on any command."""


@context.command("add")
@click.argument("name")
@click.option("--connect", "address", type=ADDRESS, required=True, metavar="ADDRESS")
@click.option("--tls-cert", metavar="FILE", help="Client certificate.")
@click.option("--tls-key", metavar="FILE", help="Client key.")
@click.option("--tls-ca", metavar="FILE", help="CA of labd's certificate.")
def add(
    name: str, address: Address, tls_cert: str | None, tls_key: str | None, tls_ca: str | None
) -> None:
    """Name a labd: labctl context add lab1 --connect HOST:18861 --tls-cert ..."""
    files = (absolute(tls_cert), absolute(tls_key), absolute(tls_ca))
    Contexts().add(Context(name, str(address), *files))
    click.echo(f"context {name} added: {address}")


@context.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def list_(as_json: bool) -> None:
    """The contexts; * marks the one in use."""
    store = Contexts()
    current = store.current() or LOCAL
    found = store.all()
    if as_json:
        rows = [{"name": c.name, "connect": c.connect, "current": c.name == current} for c in found]
        click.echo(json.dumps(rows, indent=2))
        return
    lines = [["*" if current == LOCAL else "", LOCAL, "the local socket (default)", ""]]
    lines += [
        ["*" if c.name == current else "", c.name, c.connect, "tls" if c.tls_cert else ""]
        for c in found
    ]
    click.echo("\n".join(table(("", "NAME", "ADDRESS", ""), lines)))


@context.command("use")
@click.argument("name")
def use(name: str) -> None:
    """Make NAME the default for commands without --connect (local: the local socket)."""
    Contexts().use(name)
    click.echo(f"using context {name}")


@context.command("rm")
@click.argument("name")
def rm(name: str) -> None:
    """Forget a context."""
    Contexts().remove(name)
    click.echo(f"context {name} removed")
