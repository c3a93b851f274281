"""click types for the grammar's arguments: addresses, ``KEY=VALUE`` and set ids.

A value that can never be right is a usage error (exit 2) here; whether a value is in
range is for the daemon to say (exit 1), so each limit lives in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import click

from labd.errors import UsageError
from labd.protocol import Address, parse_address


class AddressType(click.ParamType[Address, object]):
    """``unix:PATH``, an absolute ``PATH``, ``HOST:PORT`` or ``[V6]:PORT``."""

    name = "address"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Address:
        if isinstance(value, Address):
            return value
        try:
            return parse_address(str(value))
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


class KeyValueType(click.ParamType[tuple[str, str], object]):
    """``KEY=VALUE`` -> ``(KEY, VALUE)``; the value is sent as typed, the daemon parses it."""

    name = "key=value"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            key, raw = value
            return str(key), str(raw)
        key, sep, raw = str(value).partition("=")
        if not sep or not key.isidentifier():
            self.fail(
                f"expected KEY=VALUE, got {value!r} (e.g. interval=0 or lock=yes)", param, ctx
            )
        return key, raw


ADDRESS = AddressType()
_GROUP = re.compile(r"^g[0-9a-f]{6}$")  # labctl.groups.is_group_id
KEY_VALUE = KeyValueType()


def params_dict(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The ``KEY=VALUE`` arguments as a dict; a key given twice is a usage error."""
    out: dict[str, str] = {}
    for key, value in pairs:
        if key in out:
            raise click.BadParameter(f"{key} is given twice", param_hint="KEY=VALUE")
        out[key] = value
    return out


def stop_ids(items: Sequence[str]) -> tuple[int | str, ...] | Literal["all"]:
    """``all``, or set ids as integers (``stop 3 4``), or group ids as text (``g1a2b3c``)."""
    if list(items) == ["all"]:
        return "all"
    ids: list[int | str] = []
    for item in items:
        if _GROUP.match(item):
            ids.append(item)
            continue
        if item == "all":
            raise click.BadParameter(
                "'all' stands alone: stop all, or stop ID ...", param_hint="ID"
            )
        try:
            ids.append(int(item))
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not a set id (an integer, or 'all')", param_hint="ID"
            ) from None
    return tuple(ids)
