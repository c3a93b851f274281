"""What an experiment runs: its cases, the grid over counters and a swept key, the plan.

A client sends a spec as JSON (the rpyc ``compare(spec_json)``)::

    {"cases": ["shared", "shared:lock=yes", "pipe:payload=4096"],
     "counters": [1, 4], "sweep": "payload=16,1024" or null,
     "seconds": 2.0, "warmup": 0.5, "repeat": 3, "interval": 0.0, "seed": null}

A CASE is ``MECH`` or ``MECH:KEY=VALUE[,KEY=VALUE...]``; no case means the lesson's six.
Everything is checked here, before anything runs: unknown mechanisms and keys, a sweep
key a mechanism lacks, values out of range, a window too short, a grid over labd's
process limits. The plan is every grid point (case x counters x swept value) run
``repeat`` times, interleaved: each round runs every point once, in a shuffled order
(seeded, and the seed recorded), so a drift of the machine hits every case alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from labd.errors import LimitError, ParamError, UsageError
from labd.params import COMMON_PARAMS, Param, resolve

LESSON_CASES = ("shared", "shared:lock=yes", "manager", "manager:lock=yes", "queue", "pipe")
#: a window shorter than this is within the tallies' own granularity (a flat-out counter
#: publishes its tally every few milliseconds): refuse it
MIN_SECONDS = 0.2
MAX_SECONDS = 3600.0
MAX_REPEAT = 100
MAX_RUNS = 1000
#: paced runs: the window must hold this many ticks
MIN_TICKS = 5
#: keys the experiment sets itself on every run
RESERVED_KEYS = ("name", "duration", "interval")
DEFAULTS: dict[str, Any] = {"seconds": 2.0, "warmup": 0.5, "repeat": 3, "interval": 0.0}


@dataclass(frozen=True)
class Point:
    """One cell of the grid: a case at a number of counters (and a swept value)."""

    case: str
    mechanism: str
    counters: int
    given: dict[str, str]  # the case's KEY=VALUE pairs, and the swept one
    sweep_key: str | None = None
    sweep_value: str | None = None

    @property
    def label(self) -> str:
        return self.case

    def column(self) -> tuple[int, str | None]:
        """Points in the same column are compared with each other."""
        return (self.counters, self.sweep_value)


@dataclass(frozen=True)
class Plan:
    seconds: float
    warmup: float
    repeat: int
    interval: float
    seed: int
    points: list[Point]
    order: list[tuple[int, int]] = field(default_factory=list)  # (point, repeat)
    counters: list[int] = field(default_factory=list)
    sweep_key: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["order"] = [list(x) for x in self.order]
        return out


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """A stored plan back (from :meth:`Plan.as_dict`)."""
    points = [Point(**p) for p in data["points"]]
    order = [(int(a), int(b)) for a, b in data["order"]]
    rest = {k: v for k, v in data.items() if k not in ("points", "order")}
    return Plan(points=points, order=order, **rest)


def parse_case(text: str) -> tuple[str, dict[str, str]]:
    """``MECH`` or ``MECH:KEY=VALUE,...`` -> (mechanism, {key: value})."""
    if type(text) is not str or not text.strip():
        raise UsageError("a case is MECH or MECH:KEY=VALUE,... (e.g. shared:lock=yes)")
    mech, _, rest = text.strip().partition(":")
    pairs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"case {text!r}: {item!r} is not KEY=VALUE (e.g. shared:lock=yes)")
        pairs[key.strip()] = value.strip()
    return mech.strip(), pairs


def parse_sweep(text: object) -> tuple[str, list[str]]:
    """``KEY=V1,V2,...`` -> (key, values)."""
    if type(text) is not str or len(text) > 10_000:
        raise UsageError("--sweep takes KEY=V1,V2,... (e.g. payload=16,1024,65536)")
    key, eq, rest = text.partition("=")
    values = [v.strip() for v in rest.split(",") if v.strip()]
    if not eq or not key.strip() or not values:
        raise UsageError(f"--sweep {text!r}: give KEY=V1,V2,... (e.g. payload=16,1024,65536)")
    if len(set(values)) != len(values):
        raise UsageError(f"--sweep {text!r}: a value is repeated")
    return key.strip(), values


def _number(spec: Mapping[str, Any], key: str, lo: float, hi: float) -> float:
    value = spec.get(key, DEFAULTS[key])
    if type(value) not in (int, float) or not math.isfinite(value):
        raise UsageError(f"{key} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise UsageError(f"--{key} {value:g} is out of range ({lo:g} to {hi:g})")
    return float(value)


@dataclass(frozen=True)
class Limits:
    """What the plan is checked against: labd's limits and the processes running now."""

    per_set: int
    total: int
    running: int


def build_plan(
    spec: Mapping[str, Any],
    params_of: Callable[[str], tuple[Param, ...]],
    limits: Limits,
) -> Plan:
    """Check a spec and make its plan; ``params_of(mech)`` raises for unknown ones."""
    known = {"cases", "counters", "sweep", "seed", *DEFAULTS}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UsageError(f"experiment spec has no key {unknown[0]!r} (keys: {', '.join(known)})")
    seconds, warmup, interval, repeat = _timing(spec)
    counters = _counters(spec.get("counters") or [1], limits)
    sweep = spec.get("sweep")
    key, values = parse_sweep(sweep) if sweep else (None, [None])
    cases = spec.get("cases") or list(LESSON_CASES)
    if type(cases) is not list or len(cases) > 100:
        raise UsageError("cases must be a list of at most 100 MECH[:KEY=VALUE,...]")
    points = [
        _point(case, n, key, value, params_of)
        for case in cases
        for n in counters
        for value in values
    ]
    if len({(p.case, p.counters, p.sweep_value) for p in points}) != len(points):
        raise UsageError("a case is given twice: give each case once")
    if len(points) * repeat > MAX_RUNS:
        raise UsageError(f"{len(points) * repeat} runs is above {MAX_RUNS}: fewer cases or repeats")
    _check_processes(points, limits)
    seed = _seed(spec.get("seed"))
    order = _order(len(points), repeat, seed)
    return Plan(seconds, warmup, repeat, interval, seed, points, order, counters, key)


def _timing(spec: Mapping[str, Any]) -> tuple[float, float, float, int]:
    """--seconds, --warmup, --interval, --repeat, checked."""
    seconds = _number(spec, "seconds", MIN_SECONDS, MAX_SECONDS)
    warmup = _number(spec, "warmup", 0.0, MAX_SECONDS)
    interval = _number(spec, "interval", 0.0, 3600.0)
    repeat = spec.get("repeat", DEFAULTS["repeat"])
    if type(repeat) is not int or not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"--repeat must be an integer from 1 to {MAX_REPEAT}")
    if interval > 0 and seconds < MIN_TICKS * interval:
        raise UsageError(
            f"--seconds {seconds:g} is too short a window for --interval {interval:g}: "
            f"give at least {MIN_TICKS * interval:g} s ({MIN_TICKS} ticks)"
        )
    return seconds, warmup, interval, repeat


def _seed(seed: object) -> int:
    if seed is None:
        return random.SystemRandom().randrange(2**31)
    if type(seed) is not int or not 0 <= seed < 2**63:
        raise UsageError("seed must be an integer from 0 to 2**63-1")
    return seed


def _counters(raw: object, limits: Limits) -> list[int]:
    if type(raw) is not list or not raw or len(raw) > 64:
        raise UsageError("--counters takes 1 to 64 numbers, e.g. 1,2,4,8")
    for n in raw:
        if type(n) is not int or n < 1:
            raise UsageError(f"--counters: {n!r} is not a positive integer")
    if len(set(raw)) != len(raw):
        raise UsageError("--counters: a number is repeated")
    return list(raw)


def _point(
    case: object,
    counters: int,
    key: str | None,
    value: str | None,
    params_of: Callable[[str], tuple[Param, ...]],
) -> Point:
    mech, given = parse_case(case)  # type: ignore[arg-type]
    declared = params_of(mech)  # MechanismError names the unknown mechanism
    for k in RESERVED_KEYS:
        if k in given:
            what = "use --interval" if k == "interval" else "the experiment sets it"
            raise ParamError(f"case {case!r}: {k} cannot be set in a case ({what})")
    names = {p.name for p in declared} | {p.name for p in COMMON_PARAMS}
    if key is not None:
        if key not in names or key in RESERVED_KEYS:
            own = ", ".join(p.name for p in declared) or "none"
            raise ParamError(
                f"--sweep {key}: mechanism {mech!r} has no parameter {key!r} (its own: {own})"
            )
        if key in given:
            raise ParamError(f"case {case!r} sets {key}, which --sweep varies: drop one")
        given = {**given, key: str(value)}
    resolve(declared + COMMON_PARAMS, given, f"case {case!r}")  # ParamError if bad
    return Point(str(case).strip(), mech, counters, given, key, value)


def _check_processes(points: list[Point], limits: Limits) -> None:
    """Runs are one at a time: the largest must fit labd's limits beside what runs now."""
    need = 0
    for p in points:
        printers = int(p.given.get("printers", "1"))
        if max(p.counters, printers) > limits.per_set:
            raise LimitError(
                f"case {p.case!r} at {p.counters} counters and {printers} printer(s) is above "
                f"labd's limit of {limits.per_set} per set (labd --max-per-set)"
            )
        need = max(need, p.counters + printers)
    if limits.running + need > limits.total:
        raise LimitError(
            f"the grid's largest run needs {need} processes; with {limits.running} running "
            f"that is above labd's limit of {limits.total} (stop some: labctl stop)"
        )


def _order(points: int, repeat: int, seed: int) -> list[tuple[int, int]]:
    """Every round runs each point once, in an order shuffled per round."""
    rng = random.Random(seed)
    order: list[tuple[int, int]] = []
    for r in range(repeat):
        round_ = list(range(points))
        rng.shuffle(round_)
        order += [(i, r) for i in round_]
    return order
