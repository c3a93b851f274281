"""Typed parameters: how a mechanism declares its knobs and how values are checked.

A value arrives either as text (``KEY=VALUE`` on the command line) or as a JSON value of
the declared type; both are checked against the declaration, by exact type.
"""

from __future__ import annotations

import math
import shlex
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labd.errors import ParamError
from labd.protocol import PER_SET_CEILING, ParamRecord

TYPES: dict[type, str] = {int: "int", float: "float", bool: "bool", str: "str"}
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a mechanism (or one common to all of them).

    ``nullable`` parameters accept ``none`` (the default then means "not set").
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise TypeError(f"parameter {self.name!r}: type must be one of int, float, bool, str")
        if not self.name.isidentifier():
            raise TypeError(f"parameter {self.name!r}: name must be an identifier")

    def parse(self, raw: object) -> Any:
        """Turn text or a JSON value into a checked value of the declared type."""
        value = self._convert(raw)
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(self.show(c) for c in self.choices)
            raise ParamError(f"{self.name}={self.show(value)} is not allowed (choose {allowed})")
        if self.min is not None and value < self.min:
            shown = self.show(value)
            raise ParamError(f"{self.name}={shown} is below the minimum {_bound(self.min)}")
        if self.max is not None and value > self.max:
            shown = self.show(value)
            raise ParamError(f"{self.name}={shown} is above the maximum {_bound(self.max)}")
        return value

    def _convert(self, raw: object) -> Any:
        kind = TYPES[self.type]
        if raw is None or (type(raw) is str and raw.strip().lower() in ("none", "null")):
            if self.nullable:
                return None
            raise ParamError(f"{self.name} needs a {kind} value, not none")
        if type(raw) is str:
            if _not_text(raw):
                raise ParamError(
                    f"{self.name}={raw!r} holds control characters or bytes that are not text"
                )
            return self._from_text(raw.strip())
        if self.type is float and type(raw) in (int, float):
            try:
                value = float(raw)  # type: ignore[arg-type]
            except OverflowError:  # a JSON integer with hundreds of digits
                raise ParamError(f"{self.name} is too large a number") from None
            if not math.isfinite(value):
                raise ParamError(f"{self.name} must be a finite number")
            return value
        if type(raw) is self.type:
            return raw
        raise ParamError(f"{self.name} needs a {kind} value, got {type(raw).__name__} {raw!r}")

    def _from_text(self, text: str) -> Any:
        kind = TYPES[self.type]
        if self.type is str:
            return text
        if self.type is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ParamError(f"{self.name}={text!r} is not yes or no")
        try:
            value = self.type(text)
        except ValueError:
            raise ParamError(f"{self.name}={text!r} is not a valid {kind}") from None
        if self.type is float and not math.isfinite(value):
            raise ParamError(f"{self.name} must be a finite number")
        return value

    def show(self, value: Any) -> str:
        """A value as a user would type it (text quoted if it needs to be, on one line)."""
        if value is None:
            return "none"
        if type(value) is bool:
            return "yes" if value else "no"
        if type(value) is str:
            return shlex.quote(value)
        return str(value)

    def describe(self) -> ParamRecord:
        """The parameter as in ``labctl mechanisms --json`` (contract)."""
        out: ParamRecord = {
            "name": self.name,
            "type": TYPES[self.type],
            "default": self.default,
            "help": self.help,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.nullable:
            out["nullable"] = True
        return out


#: the payload parameter of message mechanisms (queue, pipe; a plugin may use it too)
PAYLOAD = Param("payload", int, 16, "bytes of payload in each message", min=0, max=1048576)


def maxsize_param(holder: str, then: str, most: int) -> Param:
    """The bound of a message mechanism's queue (queue, redis-queue): ``maxsize``
    messages the ``holder`` holds before ``then`` (what the counters meet when full)."""
    return Param(
        "maxsize", int, 1000, f"messages the {holder} holds before {then}", min=1, max=most
    )


MIN_INTERVAL = 0.0001  # a paced tick shorter than this is not pacing; 0 is flat out

COMMON_PARAMS: tuple[Param, ...] = (
    Param(
        "interval",
        float,
        1.0,
        f"seconds between increments (0 = flat out, else at least {MIN_INTERVAL:g})",
        min=0.0,
        max=3600.0,
    ),
    Param(
        "printers",
        int,
        1,
        "printer processes (labd --max-per-set bounds them too)",
        min=1,
        max=PER_SET_CEILING,
    ),
    Param(
        "duration",
        float,
        None,
        "seconds after which the set stops by itself (none = until stopped)",
        min=0.1,
        max=7 * 86400.0,
        nullable=True,
    ),
    Param(
        "start_method",
        str,
        "forkserver",
        "how the set's launchers start; they fork its workers (fork: unsafe in threaded labd)",
        choices=("forkserver", "spawn", "fork"),
    ),
    Param("name", str, "", "free text to recognise the set by"),
)


def resolve(declared: Iterable[Param], given: Mapping[str, object], owner: str) -> dict[str, Any]:
    """Check ``given`` against ``declared``; return every parameter with its value.

    Unknown keys are refused with the list of known ones.
    """
    table = {p.name: p for p in declared}
    unknown = sorted(set(given) - set(table))
    if unknown:
        known = ", ".join(table)
        raise ParamError(f"{owner} has no parameter {unknown[0]!r} (its parameters: {known})")
    values = {name: p.default for name, p in table.items()}
    for key, raw in given.items():
        values[key] = table[key].parse(raw)
    name = values.get("name")
    if type(name) is str and len(name) > 200:
        raise ParamError("name is longer than 200 characters")
    interval = values.get("interval")
    if type(interval) is float and 0 < interval < MIN_INTERVAL:
        raise ParamError(
            f"interval={interval:g} is too short a tick: give 0 (flat out) or at least "
            f"{MIN_INTERVAL:g} s"
        )
    return values


def _bound(x: float) -> str:
    """A limit as typed: ``1048576``, ``0.0001`` (never ``1.04858e+06``)."""
    return str(int(x)) if x == int(x) else repr(x)


def _not_text(text: str) -> bool:
    """Whether ``text`` holds control characters, line breaks, or lone surrogates (bytes
    that were not UTF-8, as Python decodes argv): such values cannot be stored, sent or
    printed on one line. Other Unicode (accents, non-breaking spaces ...) is welcome."""
    return any(unicodedata.category(c) in _NOT_TEXT for c in text)


_NOT_TEXT = frozenset({"Cc", "Cs", "Zl", "Zp"})
