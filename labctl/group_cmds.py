"""The command bodies for groups and for every context at once, kept out of cli.py.

``spawn ... --on``, and ``status``, ``inspect``, ``watch`` and ``stop`` given a group id
(``g`` and six hex digits), and ``status --all-contexts``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import click

from labctl import group_render
from labctl.contexts import Contexts
from labctl.groups import Groups, is_group_id
from labd.errors import ConnectError, LabError, UsageError
from labd.protocol import default_socket

WATCH_EVERY_S = 0.5
ENDED = ("stopped", "failed")


def split_ids(items: Sequence[str]) -> tuple[list[int], list[str]]:
    """Set ids (integers) and group ids (gXXXXXX) from the command line."""
    sets, groups = [], []
    for item in items:
        if is_group_id(item):
            groups.append(item)
            continue
        try:
            sets.append(int(item))
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not a set id (an integer) nor a group id (g and 6 hex digits)",
                param_hint="ID",
            ) from None
    return sets, groups


def echo(value: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(value, indent=2) if as_json else text)


def spawn_on(mechanism: str, counters: int, params: dict[str, str], on: str, as_json: bool) -> None:
    g = Groups().spawn(mechanism, counters, params, on.split(","))
    echo(g, as_json, str(g["group"]))


def status(gids: Sequence[str], as_json: bool) -> None:
    groups = Groups()
    found = [groups.status(gid) for gid in gids]
    echo(found, as_json, "\n\n".join(group_render.group(g) for g in found))


def inspect(gid: str, as_json: bool) -> None:
    g = Groups().inspect(gid)
    echo(g, as_json, group_render.group(g))


def stop(gids: Sequence[str], as_json: bool) -> None:
    groups = Groups()
    found = [groups.stop(gid) for gid in gids]
    echo(found, as_json, "\n".join(group_render.stopped(g) for g in found))


def watch(gid: str) -> None:
    """The group redrawn twice a second until it ends or Ctrl-C (one table a second
    when stdout is not a terminal)."""
    groups = Groups()
    tty = sys.stdout.isatty()
    try:
        while True:
            g = groups.status(gid)
            text = group_render.group(g)
            click.echo(("\x1b[H\x1b[J" + text) if tty else text + "\n")
            if g["state"] in ENDED:
                return
            time.sleep(WATCH_EVERY_S if tty else 1.0)
    except KeyboardInterrupt:
        return


def all_contexts(as_json: bool) -> None:
    """Every context's sets; a context that does not answer is named on stderr."""
    groups = Groups()
    local = default_socket().exists()  # a silent local socket is no context of the user's
    names = ["local"] * local + [c.name for c in Contexts().all()]
    answers: dict[str, Any] = {}  # a context's sets, or why it did not answer

    def ask(name: str) -> None:
        try:
            client = groups.connect(name, autostart=False)
        except LabError as exc:
            answers[name] = exc.message
            return
        try:
            answers[name] = client.status(())
        except LabError as exc:
            answers[name] = exc.message
        finally:
            client.close()

    threads = [threading.Thread(target=ask, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = []
    for name in names:
        got = answers.get(name, "no answer")
        if isinstance(got, str):
            click.echo(f"labctl: context {name}: {got}", err=True)
            continue
        rows += [{"context": name, **s} for s in got]
    echo(rows, as_json, group_render.all_contexts(rows))
    if all(isinstance(answers.get(n), str) for n in names):
        raise ConnectError("no context answered")


def only_groups(gids: Sequence[str], sets: Sequence[int], what: str) -> None:
    if gids and sets:
        raise UsageError(f"{what} takes set ids or group ids, not both at once")
