"""The hardened API surface, attacked: random arguments to every rpyc method, random lines
through the labctl grammar, fifty clients at once, and clients that vanish in the middle
of a call or of a request.

Everything runs against real ``labd`` processes. Valid spawns use the fake mechanisms of
tests/fakes.py, stay small (at most 3 counters and 3 printers) and are stopped at once,
so the random tests stay cheap on a 2-core machine.

The bugs they found have each a regression test at the end of this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import reprlib
import selectors
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import rpyc
from daemonkit import one_daemon
from fakes import BAD, CrashingCounter, FakeCounter
from helpers import Daemon, one_line, wait_for
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import labd.errors as E
from labctl.cli import run
from labctl.state import State
from labctl.target import Target
from labd.params import COMMON_PARAMS, Param, resolve
from labd.protocol import MAX_PER_SET, Address, typed_value
from labd.server.service import API, MAX_IDS, MAX_JSON

pytestmark = pytest.mark.daemon

FAST = json.dumps({"interval": 0.05})


def fuzz(examples: int) -> Any:
    """Hypothesis settings of this module: reproducible on CI, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# --- talking to labd ------------------------------------------------------------------------
def labd_class(exc: BaseException) -> type | None:
    """The labd.errors class a remote exception was rebuilt as (rpyc derives from it)."""
    return next((c for c in type(exc).__mro__ if vars(E).get(c.__name__) is c), None)


def call(conn: rpyc.Connection, method: str, *args: Any) -> Any:
    result = getattr(conn.root, method)(*args)
    assert type(result) is str, f"{method} returned {type(result).__name__}, not JSON text"
    return json.loads(result)


def spawn(conn: rpyc.Connection, counters: int = 1, params: str = FAST) -> int:
    return int(call(conn, "spawn", "fake", counters, params)["id"])


def state_of(conn: rpyc.Connection, sid: int) -> str:
    return str(call(conn, "status", (sid,))[0]["state"])


def stop_now(conn: rpyc.Connection, sid: int) -> None:
    """Stop a set at once; it may already be stopping by itself (duration, crash)."""
    with contextlib.suppress(E.SetBusy):
        call(conn, "stop", (sid,))


def clients_of(d: Daemon) -> int:
    """Client connections labd holds now (its sockets on the path, but the listener)."""
    conns = psutil.Process(d.pid).net_connections(kind="unix")
    return sum(1 for c in conns if c.laddr == d.socket) - 1


def held_clients(d: Daemon, count: int, what: str) -> None:
    """Wait until labd holds exactly ``count`` client connections (it notices a client
    that left a moment later)."""
    wait_for(lambda: clients_of(d) == count, 10, f"labd to hold {count} connection(s): {what}")


class LogSlice:
    """What labd logs from now on; it must hold no traceback and no internal error."""

    def __init__(self, d: Daemon) -> None:
        self.daemon = d
        self.start = len(d.log_text())

    def text(self) -> str:
        return self.daemon.log_text()[self.start :]

    def assert_clean(self) -> None:
        text = self.text()
        assert "Traceback" not in text, f"labd logged a traceback:\n{text}"
        assert "internal error" not in text, f"labd logged an internal error:\n{text}"


class Link:
    """A plain rpyc connection, made again if a bad call made labd drop it (so that one
    failing example cannot make every later one fail too, and shrinking stays honest)."""

    def __init__(self, d: Daemon) -> None:
        self.daemon = d
        self.conn = d.connect()

    def get(self) -> rpyc.Connection:
        if self.conn.closed:
            self.conn = self.daemon.connect()
        return self.conn

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="module")
def loaded(module_labd: Daemon) -> frozenset[str]:
    """The mechanisms module_labd loaded (built-ins, the fakes, any installed plugin)."""
    with module_labd.connect() as conn:
        return frozenset(m["name"] for m in call(conn, "mechanisms") if "error" not in m)


def _repr() -> reprlib.Repr:
    """Arguments shown short in failure messages (Repr takes keywords from Python 3.12)."""
    shown = reprlib.Repr()
    shown.maxstring = shown.maxother = 120
    shown.maxlong = 60
    return shown


SHOW = _repr()


# --- what makes a spawn costly, and inputs that hit a known bug ---------------------------------
CHEAP: dict[str, Any] = {"fake": FakeCounter, "crashing": CrashingCounter}
MAX_SMALL = 3  # counters or printers in a valid random spawn
PARAMS: dict[str, Param] = {p.name: p for p in (*COMMON_PARAMS, *FakeCounter.params)}
FLOAT_PARAMS = frozenset(n for n, p in PARAMS.items() if p.type is float)


def parsed_params(text: object) -> dict[str, Any] | None:
    """params_json as labd reads it, or None where labd refuses the text itself."""
    if type(text) is not str or len(text) > MAX_JSON:
        return None
    try:
        value = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return None
    if type(value) is not dict:
        return None
    if any(type(v) not in (str, int, float, bool, type(None)) for v in value.values()):
        return None
    return value


def costly(mechanism: object, counters: object, params: dict[str, Any] | None, loaded: Any) -> bool:
    """Whether labd would really start this set and it is not a small one of a fake."""
    if type(mechanism) is not str or mechanism not in loaded:
        return False
    if type(counters) is not int or not 1 <= counters <= MAX_PER_SET or params is None:
        return False
    if mechanism not in CHEAP:
        return True  # a built-in, broken_setup (logs a traceback on purpose), a plugin
    try:
        values = resolve(CHEAP[mechanism].params + COMMON_PARAMS, params, mechanism)
    except Exception:
        return False  # refused (or a known bug, left out elsewhere)
    return bool(
        counters > MAX_SMALL
        or MAX_SMALL < values["printers"] <= MAX_PER_SET  # above: labd refuses (LimitError)
        or values["start_method"] != "forkserver"  # spawn: slow; fork: may deadlock
        or values.get("slow_stop", 0.0) > 0.2
    )


def has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


LINE_BREAK = re.compile(r"[\n\r\v\f]")  # what moves a terminal to another line


def has_line_break(text: str) -> bool:
    return LINE_BREAK.search(text) is not None


# --- random values ----------------------------------------------------------------------------
LONG_SIZES = [99, 100, 101, 199, 200, 201, 1000, MAX_JSON, MAX_JSON + 1, 200_000]
HUGE_INTS = st.builds(
    lambda e, neg: -(2**e) if neg else 2**e,
    st.integers(0, 14_000),  # brine sends ints as decimal text: at most 4300 digits
    st.booleans(),
)
INTS = st.one_of(
    st.integers(-3, 300),
    st.integers(),
    HUGE_INTS,
    st.sampled_from([0, -1, 2**62, 2**62 + 1, 2**63, MAX_IDS, MAX_IDS + 1, 10**9]),
)
FLOATS = st.one_of(
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5, 1.0, 3.0, 1e308, 5e-324]),
)
LONG_TEXTS = st.builds(
    lambda ch, n: ch * n,
    st.sampled_from(["x", " ", "é", "\x00", "{", "\n", "🙂", "a\x1b[2J"]),
    st.sampled_from(LONG_SIZES),
)
TEXTS = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(max_codepoint=0x1F), max_size=8),  # control characters
    st.text(st.characters(codec="utf-8", min_codepoint=0x80), max_size=8),
    LONG_TEXTS,
)
#: lone surrogates: what argv bytes that are not UTF-8 decode to (surrogateescape)
SURROGATES = st.builds(
    lambda a, s, b: a + s + b,
    st.text(max_size=4),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.text(max_size=4),
)

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(),
    st.integers(300, 400).map(lambda n: 10**n),  # valid JSON, too large for a float
    FLOATS,
    st.text(max_size=20),
    SURROGATES,
)
JSON_VALUES = st.one_of(
    JSON_SCALARS,
    st.lists(JSON_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=2),
)
SMALL = st.integers(1, MAX_SMALL)
#: per known parameter: valid values (small ones only), invalid ones and anything
PARAM_VALUES = {
    "interval": st.one_of(st.sampled_from([0, 0.05, 0.5, 1, -1, 3601]), JSON_VALUES),
    "printers": st.one_of(SMALL, st.integers(max_value=0), st.integers(min_value=257), JSON_VALUES),
    "duration": st.one_of(st.sampled_from([None, 0.05, 0.1, 0.2, 10, "none"]), JSON_VALUES),
    "start_method": st.one_of(
        st.sampled_from(["forkserver", "spawn", "fork", "FORKSERVER", " forkserver ", ""]),
        JSON_VALUES,
    ),
    "name": st.one_of(st.sampled_from(["x" * 200, "x" * 201]), JSON_VALUES),
    "slow_stop": st.one_of(st.sampled_from([0, 0.0, 0.01, -1, 10.5, "0"]), JSON_VALUES),
    "label": JSON_VALUES,
    "level": st.one_of(st.integers(-1, 7), JSON_VALUES),
    "crash_after": st.one_of(st.integers(-1, 5), JSON_VALUES),
    "crash_index": st.one_of(st.integers(-2, 3), JSON_VALUES),
}
PARAM_OBJECTS = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries({}, optional=PARAM_VALUES),
    st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=2),
)


def to_json(value: Any, ascii_only: bool) -> str:
    text = json.dumps(value, ensure_ascii=ascii_only)
    return json.dumps(value) if has_surrogate(text) else text  # escaped, as JSON allows


def nested(depth: int, kind: str) -> str:
    if kind == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


#: parameter objects that are often valid for one of the fakes
LIKELY_OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "interval": st.sampled_from([0, 0.05, 1]),
        "printers": SMALL,
        "duration": st.sampled_from([None, 0.1, 5]),
        "name": st.text(max_size=20),
        "level": st.integers(1, 5),
        "label": st.text(max_size=20),
        "crash_after": st.integers(1, 5),
    },
)
#: what one parameter of an otherwise valid spawn gets: anything, and the nasty cases
BAD_VALUES = st.one_of(
    JSON_VALUES,
    SURROGATES,
    SURROGATES,
    st.text(st.sampled_from("a1=-\n\r\t\x1b\x00\x7f é"), min_size=1, max_size=6),
    st.integers(300, 400).map(lambda n: 10**n),
    st.floats(0, 0.01),
    st.sampled_from(["1e-9", "5e-324", "1e400", "-0", "0x10", "٣", "none", "yes"]),
)
#: a valid spawn of the fake but for (at most) one parameter
NEAR_VALID = st.builds(
    lambda base, key, value: {**base, key: value},
    LIKELY_OBJECTS.map(lambda d: {k: v for k, v in d.items() if k != "crash_after"}),
    st.sampled_from(sorted(PARAMS)),
    BAD_VALUES,
)
PARAM_TEXTS = st.one_of(
    st.builds(to_json, LIKELY_OBJECTS, st.booleans()),
    st.builds(to_json, PARAM_OBJECTS, st.booleans()),
    st.builds(to_json, PARAM_OBJECTS, st.booleans()),
    st.sampled_from(["{}", "", " ", "null", "[]", "{", "{bad", '{"a":}', "[1, 2]", '"{}"']),
    st.sampled_from(['{"interval": NaN}', '{"interval": Infinity}', '{"a": 1, "a": 2}']),
    st.builds(
        lambda s, k: s[:k], st.builds(to_json, PARAM_OBJECTS, st.booleans()), st.integers(0, 40)
    ),
    st.builds(to_json, JSON_VALUES, st.booleans()),
    st.builds(nested, st.integers(1, 3000), st.sampled_from("[{")),
    TEXTS,
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    FLOATS,
    TEXTS,
    st.binary(max_size=40),
    st.complex_numbers(),
    PARAM_TEXTS,
    st.frozensets(st.one_of(st.integers(-2, 5), st.text(max_size=3)), max_size=3),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),  # by value
        st.lists(inner, max_size=4),  # lists and dicts travel as netrefs
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=6,
)


def never_many(value: Any) -> Any:
    """A counter count between 4 and the per-set limit becomes one above the limit."""
    if type(value) is int and MAX_SMALL < value <= MAX_PER_SET:
        return value + MAX_PER_SET
    return value


MECHANISMS = st.one_of(
    st.sampled_from(sorted(CHEAP)),
    st.sampled_from(sorted(CHEAP)),
    st.sampled_from([*BAD, "broken_setup", "shared", "queue", "nosuch", "", "FAKE", "fake "]),
    TEXTS,
    VALUES,
)
COUNTERS = st.one_of(
    SMALL,
    SMALL,
    st.integers(max_value=0),
    st.integers(min_value=MAX_PER_SET + 1),
    HUGE_INTS,
    VALUES,
).map(never_many)
SET_IDS = st.one_of(st.integers(1, 80), INTS, VALUES)
ID_TUPLES = st.one_of(
    st.lists(SET_IDS, max_size=5).map(tuple),
    st.just(()),
    st.sampled_from(
        ["all", "ALL", "all ", tuple(range(1, MAX_IDS + 1)), tuple(range(MAX_IDS + 1))]
    ),
    VALUES,
)
OFFSETS = st.one_of(st.integers(-2, 20_001), INTS, VALUES)

#: the documented signature of each method: (required, at most) positional arguments
ARITY: dict[str, tuple[int, int]] = {
    "version": (0, 0),
    "mechanisms": (0, 0),
    "spawn": (2, 3),
    "status": (0, 1),
    "inspect": (1, 1),
    "explain": (1, 1),
    "stop": (1, 1),
    "tail": (1, 3),
    "compare": (1, 1),
    "experiment": (1, 1),
    "experiments": (0, 1),
    "cancel_experiment": (1, 1),
    "history": (0, 2),
    "samples": (1, 1),
}
#: what a case in a spec may say, all of it JSON (MECHANISMS holds any value: frozensets too)
CASE_WORDS = st.one_of(
    st.sampled_from(sorted(CHEAP)),
    st.sampled_from([*BAD, "shared", "queue", "nosuch", "", "shared:lock=yes", "pipe:x=1"]),
    TEXTS,
    JSON_SCALARS,
)
#: experiment specs that never start one (each has a window too short to measure), so
#: a fuzzed compare() cannot leave runs behind; malformed texts and values besides
SPEC_TEXTS = st.one_of(
    st.builds(
        to_json,
        st.fixed_dictionaries(
            {
                "seconds": st.one_of(
                    st.floats(max_value=0.19),
                    JSON_SCALARS.filter(lambda v: type(v) is not float and type(v) is not int),
                )
            },
            optional={
                "cases": st.one_of(st.lists(CASE_WORDS, max_size=3), JSON_VALUES),
                "counters": st.one_of(st.lists(INTS, max_size=3), JSON_VALUES),
                "sweep": st.one_of(TEXTS, JSON_VALUES),
                "repeat": st.one_of(INTS, JSON_VALUES),
            },
        ),
        st.booleans(),
    ),
    st.sampled_from(["", " ", "null", "[]", "{", '{"a":}', '"{}"']),
    VALUES,
)
POSITIONS: dict[str, list[st.SearchStrategy[Any]]] = {
    "version": [],
    "mechanisms": [],
    "spawn": [MECHANISMS, COUNTERS, PARAM_TEXTS],
    "status": [ID_TUPLES],
    "inspect": [SET_IDS],
    "explain": [SET_IDS],
    "stop": [ID_TUPLES],
    "tail": [SET_IDS, OFFSETS, OFFSETS],
    "compare": [SPEC_TEXTS],
    "experiment": [SET_IDS],
    "experiments": [OFFSETS],
    "cancel_experiment": [SET_IDS],
    "history": [OFFSETS, st.one_of(st.none(), MECHANISMS, VALUES)],
    "samples": [SET_IDS],
}
WRONG_ARITY = re.compile(
    r"takes .*positional arguments? but \d+ (was|were) given|missing \d+ required"
)


@st.composite
def api_calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    """A method (spawn more often: it checks the most) and its arguments, mostly as many
    as it takes, sometimes fewer or more; or a spawn valid but for one parameter."""
    method = draw(st.sampled_from(["spawn", "spawn", "spawn", *["near"] * 3, *sorted(ARITY)]))
    if method == "near":  # the deepest checks: each parameter's, of a set that starts
        return "spawn", ("fake", draw(SMALL), to_json(draw(NEAR_VALID), draw(st.booleans())))
    lo, hi = ARITY[method]
    count = draw(st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.integers(0, hi + 2)))
    positions = POSITIONS[method]
    return method, tuple(draw(positions[i] if i < len(positions) else VALUES) for i in range(count))


def check_answer(conn: rpyc.Connection, method: str, args: tuple[Any, ...]) -> Any:
    """Call; the answer must be JSON text, or an error of labd's with a one-line message
    (a TypeError only for a wrong number of arguments). Returns the decoded answer."""
    shown = f"{method}{SHOW.repr(args)}"
    lo, hi = ARITY[method]
    try:
        answer = getattr(conn.root, method)(*args)
    except Exception as exc:
        text = one_line(exc)
        assert "internal error" not in text, f"{shown}: {text}"
        if labd_class(exc) is None:
            assert isinstance(exc, TypeError) and hasattr(exc, "_remote_tb"), (
                f"{shown} raised {type(exc).__mro__[1].__name__}, no labd error: {text}"
            )
            assert not lo <= len(args) <= hi, f"{shown}: TypeError for a right arity: {text}"
            assert WRONG_ARITY.search(text), f"{shown}: {text}"
        return None
    assert type(answer) is str, f"{shown} answered {type(answer).__name__}, not JSON text"
    return json.loads(answer)


# --- 1a. random arguments to every method ----------------------------------------------------
def test_the_fuzzed_methods_are_the_whole_api() -> None:
    assert set(API) == {*ARITY, "shutdown"}, "a new method: add it to ARITY and POSITIONS"


def finish_clean(d: Daemon, log: LogSlice) -> None:
    """Stop every set; labd must answer, run nothing, and have logged nothing bad."""
    with d.connect() as conn:
        call(conn, "stop", "all")
        assert call(conn, "version")["pid"] == d.pid
        live = [s["id"] for s in call(conn, "status") if s["state"] in ("running", "stopping")]
        assert live == []
    log.assert_clean()


@pytest.mark.timeout(240)  # 500 examples with real spawns: ~20 s alone, far more under load
def test_random_arguments_to_every_method(module_labd: Daemon, loaded: frozenset[str]) -> None:
    log = LogSlice(module_labd)
    link = Link(module_labd)

    @fuzz(500)
    @given(calls=st.lists(api_calls(), min_size=1, max_size=3))
    def examples(calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        for method, args in calls:
            if method == "spawn" and len(args) in (2, 3):
                params = parsed_params(args[2] if len(args) == 3 else "{}")
                assume(not costly(args[0], args[1], params, loaded))
        for method, args in calls:
            note(f"{method}{SHOW.repr(args)}")
            answer = check_answer(link.get(), method, args)
            if method == "spawn" and answer is not None:
                assert type(answer) is dict and type(answer["id"]) is int, answer
                stop_now(link.get(), answer["id"])
        assert call(link.get(), "version")["pid"] == module_labd.pid

    try:
        examples()
    finally:
        link.close()
    finish_clean(module_labd, log)


def test_shutdown_refuses_extra_arguments(labd_daemon: Daemon) -> None:
    """shutdown is fuzzed alone, on a daemon of its own: only with arguments it must
    refuse (a wrong arity), so that labd stays up."""
    log = LogSlice(labd_daemon)
    link = Link(labd_daemon)

    @fuzz(25)
    @given(extra=st.lists(VALUES, min_size=1, max_size=4).map(tuple))
    def examples(extra: tuple[Any, ...]) -> None:
        conn = link.get()
        with pytest.raises(TypeError) as info:
            conn.root.shutdown(*extra)
        assert labd_class(info.value) is None and hasattr(info.value, "_remote_tb")
        assert WRONG_ARITY.search(one_line(info.value)), info.value.args
        assert call(conn, "version")["pid"] == labd_daemon.pid

    try:
        examples()
    finally:
        link.close()
    assert labd_daemon.proc is not None and labd_daemon.proc.poll() is None
    finish_clean(labd_daemon, log)


# --- 1b. random lines through the labctl grammar ----------------------------------------------
COMMANDS = ["mechanisms", "spawn", "status", "inspect", "stop", "tail"]
BLOCKING = {"shutdown", "watch", "repl"}  # ends labd, or runs until Ctrl-C
#: what argv bytes that are not UTF-8 decode to (os.fsdecode: surrogateescape)
ARGV_BYTES = st.binary(min_size=1, max_size=6).map(lambda b: b.decode("utf-8", "surrogateescape"))
#: words a terminal user can still type: control characters, bytes that are not UTF-8
NASTY = st.one_of(
    ARGV_BYTES,
    st.text(st.sampled_from("a1=-\n\r\t\x1b\x00\x7f é"), min_size=1, max_size=6),
)
CLI_VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "0.05", "-1", "1e400", "nan", "inf", "-inf"]),
    st.sampled_from(["yes", "no", "none", "null", "", "forkserver", "spawn", "fork", " 1 "]),
    st.sampled_from(["0x1", "1_0", "x" * 201, "0.001", "1e-9", "5e-324", "4", "200"]),
    st.text(st.characters(codec="utf-8"), max_size=10),
    NASTY,
)
CLI_KEYS = st.one_of(
    st.sampled_from([*sorted(PARAMS), "crash_after", "crash_index", "lock", "payload"]),
    st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
    st.text(st.characters(codec="utf-8"), max_size=5),
)
CLI_TOKENS = st.one_of(
    st.sampled_from(COMMANDS),
    st.sampled_from([*CHEAP, "nosuch", *BAD, "FAKE", "shared"]),
    st.sampled_from(["--json", "-n", "--lines", "-h", "--help", "--", "-x", "--bogus", "-"]),
    st.sampled_from(["--lines=3", "-n2", "--connect", "/tmp/x.sock", "--no-autostart"]),
    st.sampled_from(["--tls-ca", "all", "ALL", "all,", "1,2", "help"]),
    st.integers(-3, 3).map(str),
    st.integers(1, 80).map(str),
    st.sampled_from([MAX_PER_SET + 1, 10**6, 2**70, -(2**70)]).map(str),
    st.builds(lambda k, v: f"{k}={v}", CLI_KEYS, CLI_VALUES),
    st.text(st.characters(codec="utf-8"), max_size=12),
    NASTY,
    NASTY,
)


def as_int(token: str) -> int | None:
    """The integer click would read from a token (int() accepts ' 7', '1_0', '٣')."""
    try:
        return int(token)
    except ValueError:
        return None


def tame(tokens: list[str]) -> list[str]:
    """In a spawn line, a number between 4 and the per-set limit becomes a small one."""
    if "spawn" not in tokens:
        return tokens
    out = []
    for token in tokens:
        n = as_int(token)
        out.append(
            str(n % MAX_SMALL + 1) if n is not None and MAX_SMALL < n <= MAX_PER_SET else token
        )
    return out


def blocks(tokens: list[str]) -> bool:
    """A line that would end labd or not return: shutdown, watch, repl, tail -f."""
    if BLOCKING & set(tokens):
        return True
    return "tail" in tokens and any(
        t.startswith("--f") or (t.startswith("-") and not t.startswith("--") and "f" in t)
        for t in tokens
    )


def repl_split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split()


JSON_FLAG = st.sampled_from([[], [], ["--json"]])


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A command with arguments of the right kinds (mostly), then some noise."""
    ids = st.integers(1, 80).map(str)
    command = draw(st.sampled_from([*COMMANDS, "spawn", "spawn"]))  # spawn parses the most
    pairs = st.builds(lambda k, v: f"{k}={v}", st.sampled_from(sorted(PARAMS)), CLI_VALUES)
    if command == "spawn" and draw(st.booleans()):  # valid but for one KEY=VALUE
        bad = draw(pairs)
        valid = draw(LIKELY_OBJECTS).items()
        good = [
            f"{k}={typed_value(v)}" for k, v in valid if k not in (bad.split("=")[0], "crash_after")
        ]
        args = ["fake", draw(SMALL.map(str)), *good, bad]
    elif command == "spawn":
        mech = draw(st.one_of(st.sampled_from(sorted(CHEAP)), CLI_TOKENS, NASTY, ARGV_BYTES))
        count = draw(st.one_of(SMALL.map(str), CLI_TOKENS))
        args = [mech, count, *draw(st.lists(pairs, max_size=3))]
    elif command == "status":
        args = draw(st.lists(ids, max_size=3))
    elif command == "stop":
        args = draw(st.one_of(st.just(["all"]), st.lists(ids, max_size=3)))
    elif command == "tail":
        args = [draw(ids), *draw(st.sampled_from([[], ["-n", "3"], ["--lines", "0"], ["-n"]]))]
    elif command == "inspect":
        args = [draw(ids)]
    else:
        args = []
    noise = draw(st.lists(CLI_TOKENS, max_size=2))
    return [command, *args, *draw(JSON_FLAG), *noise]


CLI_LINES = (
    st.one_of(
        command_lines(),
        command_lines(),
        command_lines(),
        st.builds(
            lambda head, rest: [head, *rest],
            st.sampled_from(COMMANDS),
            st.lists(CLI_TOKENS, max_size=6),
        ),
        st.lists(CLI_TOKENS, max_size=6),
        st.lists(CLI_TOKENS, max_size=6).map(" ".join).map(repl_split),
        st.text(st.characters(codec="utf-8"), max_size=40).map(repl_split),
    )
    .map(tame)
    .filter(lambda tokens: not blocks(tokens))
)


def cli_costly(tokens: list[str], loaded: frozenset[str]) -> bool:
    """Whether a spawn line could start a set that is not a small one of a fake."""
    if "spawn" not in tokens:
        return False
    for token in tokens:
        if token in loaded and token not in CHEAP:
            return True
        n = as_int(token)
        if n is not None and MAX_SMALL < n <= MAX_PER_SET:
            return True
        key, sep, raw = token.partition("=")
        if not sep or key not in ("printers", "slow_stop", "start_method"):
            continue
        try:
            value = PARAMS[key].parse(raw)
        except Exception:
            continue
        if key == "printers" and MAX_SMALL < value <= MAX_PER_SET:
            return True
        if key == "slow_stop" and value > 0.2:
            return True
        if key == "start_method" and value != "forkserver":
            return True
    return False


def run_line(tokens: list[str], state: State) -> tuple[int, str, str]:
    """labctl's run() in-process; stdout strict UTF-8 and stderr backslashreplace, as
    Python sets them up on a UTF-8 terminal."""
    raw_out, raw_err = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(raw_out, encoding="utf-8", errors="strict")
    err = io.TextIOWrapper(raw_err, encoding="utf-8", errors="backslashreplace")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run(tokens, state=state)
    out.flush()
    err.flush()
    return code, raw_out.getvalue().decode(), raw_err.getvalue().decode()


@pytest.fixture
def no_autostart(monkeypatch: pytest.MonkeyPatch) -> None:
    """labctl may not start a labd of its own here (its target says so too)."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("labctl tried to start labd")

    monkeypatch.setattr("labctl.autostart.start_daemon", forbidden)
    monkeypatch.delenv("LABCTL_DEBUG", raising=False)  # would re-raise internal errors


@pytest.mark.usefixtures("no_autostart")
def test_random_lines_through_the_labctl_grammar(
    module_labd: Daemon, loaded: frozenset[str]
) -> None:
    log = LogSlice(module_labd)
    # as the REPL runs lines: one State for the session; interactive, so that a line
    # with no command shows the help instead of opening a REPL
    state = State(Target(Address(path=module_labd.socket)), interactive=True)
    side = Link(module_labd)

    @fuzz(500)
    @given(tokens=CLI_LINES)
    def examples(tokens: list[str]) -> None:
        assume(not cli_costly(tokens, loaded))
        code, out, err = run_line(tokens, state)
        note(f"labctl {shlex.join(tokens)} -> {code}\nstdout: {out!r}\nstderr: {err!r}")
        assert type(code) is int and code in (0, 1, 2, 3)
        assert code != 3, "labd runs all along: it dropped labctl"
        assert "Traceback" not in out + err
        if code == 0:
            assert err == ""
        else:
            assert err.endswith("\n") and not has_line_break(err[:-1]), err
            assert err.startswith("labctl: ") and err[len("labctl: ") :].strip(), err
            assert "internal error" not in err
        conn = side.get()
        if "spawn" in tokens:
            call(conn, "stop", "all")
        assert call(conn, "version")["pid"] == module_labd.pid

    try:
        examples()
    finally:
        state.close()
        side.close()
    finish_clean(module_labd, log)


# --- 2. many clients at once -------------------------------------------------------------------
CLIENTS = 50


def test_fifty_concurrent_clients_are_all_served(module_labd: Daemon) -> None:
    log = LogSlice(module_labd)
    with module_labd.connect() as conn:
        base = spawn(conn)
        wait_for(lambda: call(conn, "tail", base)["lines"], 10, "a printer line of the base set")
    held_clients(module_labd, 0, "before the clients")
    # every client connects and is answered before any goes on: 50 connections at once
    connected = threading.Barrier(CLIENTS + 1, timeout=60)
    go = threading.Barrier(CLIENTS + 1, timeout=60)
    errors: list[tuple[int, BaseException]] = []
    stopped: dict[int, dict[str, Any]] = {}

    def client(i: int) -> None:
        try:
            with module_labd.connect() as c:
                assert call(c, "version")["pid"] == module_labd.pid
                connected.wait()
                go.wait()
                assert base in [s["id"] for s in call(c, "status")]
                assert call(c, "tail", base, 0, 5)["id"] == base
                if i % 5 == 0:
                    sid = spawn(c)
                    (stopped[i],) = call(c, "stop", (sid,))
                assert call(c, "inspect", base)["id"] == base
                assert call(c, "version")["pid"] == module_labd.pid
        except BaseException as exc:  # reported below
            errors.append((i, exc))
            connected.abort()
            go.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    held = 0
    try:
        connected.wait()
        held = clients_of(module_labd)
        go.wait()
    except threading.BrokenBarrierError:
        pass  # a client failed: its error says why
    finally:
        deadline = time.monotonic() + 60
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "clients still waiting for labd"
    assert not errors, errors[:3]
    assert held == CLIENTS, f"labd held {held} client connections at once, not {CLIENTS}"
    assert len(stopped) == CLIENTS // 5
    for record in stopped.values():
        assert record["state"] == "stopped" and record["lost"] == 0, record
    with module_labd.connect() as conn:
        assert call(conn, "version")["pid"] == module_labd.pid
        call(conn, "stop", (base,))
    held_clients(module_labd, 0, "after the clients")
    finish_clean(module_labd, log)


# --- 3. clients that vanish ----------------------------------------------------------------------
STOPPING_CLIENT = """
import sys
from rpyc.utils.factory import unix_connect
conn = unix_connect(sys.argv[1], config={"sync_request_timeout": 60})
print("calling", flush=True)
conn.root.stop((int(sys.argv[2]),))
print("returned", flush=True)
"""

HALF_FRAME_CLIENT = """
import signal, socket, struct, sys
from rpyc.core import brine, consts
# a real request (a call with a 1 MB argument), framed as rpyc frames it
body = brine.dump((consts.MSG_REQUEST, 1, (consts.HANDLE_CALL, (0, ("x" * 1_000_000,), ()))))
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.sendall(struct.pack("!LB", len(body), 0) + body[:1024])
print("sent", len(body), flush=True)
signal.pause()  # until killed, half of the frame sent
"""

LINGER = 2.0  # seconds each fake counter lingers once asked to stop


class StatusLoop(threading.Thread):
    """Another client, calling status in a loop on its own connection."""

    def __init__(self, d: Daemon, ids: tuple[int, ...]) -> None:
        super().__init__(name="status-loop", daemon=True)
        self.daemon_ = d
        self.ids = ids
        self.calls = 0
        self.errors: list[BaseException] = []
        self.states: set[str] = set()
        self.seen_stopping = 0  # answers that showed a set stopping
        self._quit = threading.Event()

    def run(self) -> None:
        try:
            with self.daemon_.connect() as conn:
                while not self._quit.is_set():
                    states = {s["state"] for s in call(conn, "status", self.ids)}
                    self.states |= states
                    self.seen_stopping += "stopping" in states
                    self.calls += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def served(self, more: int, what: str) -> None:
        """Wait until ``more`` further calls were answered."""
        target = self.calls + more
        wait_for(lambda: self.calls >= target or self.errors, 10, what)
        assert not self.errors, self.errors

    def finish(self) -> None:
        self._quit.set()
        self.join(30)
        assert not self.is_alive(), "the status loop is stuck"
        assert not self.errors, self.errors


def client_process(script: str, *args: str) -> subprocess.Popen[bytes]:
    """A separate client process (with this session's marker in its environment)."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def read_line(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the client process said nothing within {timeout} s")
    line = proc.stdout.readline().decode()
    if not line:
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        raise AssertionError(f"the client process ended: {proc.wait(5)}\n{stderr}")
    return line


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def test_a_client_that_vanishes_mid_call_does_not_disturb_others(module_labd: Daemon) -> None:
    log = LogSlice(module_labd)
    with module_labd.connect() as conn:
        params = json.dumps({"interval": 0.05, "slow_stop": LINGER})
        sid = spawn(conn, 2, params)
        wait_for(lambda: call(conn, "status", (sid,))[0]["attempted"] >= 2, 10, "increments")
        loop = StatusLoop(module_labd, (sid,))
        loop.start()
        held_clients(module_labd, 2, "this test's and the status loop's")
        proc = client_process(STOPPING_CLIENT, module_labd.socket, str(sid))
        try:
            assert read_line(proc) == "calling\n"
            wait_for(lambda: state_of(conn, sid) == "stopping", 10, "the client's stop to begin")
            proc.kill()
            assert proc.wait(10) == -signal.SIGKILL
            # it was killed in the middle of its call: the stop is still under way
            assert state_of(conn, sid) == "stopping"
            seen = loop.seen_stopping
            wait_for(lambda: state_of(conn, sid) == "stopped", LINGER + 15, "the stop to end")
            # the other client was answered all along, the set stopping in its answers
            assert loop.seen_stopping >= seen + 3, "status was not answered during the stop"
            held_clients(module_labd, 2, "the dead client's is let go once its call ended")
        finally:
            kill(proc)
            loop.finish()
        assert proc.stdout is not None and proc.stdout.closed
        final = call(conn, "inspect", sid)
        assert final["lost"] == 0 and final["value"] == final["attempted"] > 0, final
        assert all(p["exitcode"] == 0 for p in final["processes"]), final["processes"]
        assert {"running", "stopping", "stopped"} >= loop.states >= {"stopping"}
    with module_labd.connect() as fresh:
        assert call(fresh, "version")["pid"] == module_labd.pid
    finish_clean(module_labd, log)


def test_a_client_killed_while_sending_a_request_does_not_disturb_others(
    module_labd: Daemon,
) -> None:
    log = LogSlice(module_labd)
    with module_labd.connect() as conn:
        sid = spawn(conn)
        loop = StatusLoop(module_labd, (sid,))
        loop.start()
        loop.served(5, "the status loop to start")
        held_clients(module_labd, 2, "this test's and the status loop's")
        proc = client_process(HALF_FRAME_CLIENT, module_labd.socket)
        try:
            sent = read_line(proc).split()
            assert sent[0] == "sent" and int(sent[1]) > 1_000_000, sent
            held_clients(module_labd, 3, "labd accepted the half-sending client")
            # labd waits for the rest of that frame: everyone else is served meanwhile
            loop.served(20, "status answers while a request is half sent")
            with module_labd.connect() as other:
                assert call(other, "version")["pid"] == module_labd.pid
            proc.kill()
            assert proc.wait(10) == -signal.SIGKILL
            held_clients(module_labd, 2, "labd dropped the half frame of the dead client")
            loop.served(20, "status answers after the client died")
        finally:
            kill(proc)
            loop.finish()
        assert state_of(conn, sid) == "running"
        call(conn, "stop", (sid,))
    with module_labd.connect() as fresh:
        assert call(fresh, "version")["pid"] == module_labd.pid
    finish_clean(module_labd, log)


# --- known bugs: one regression test each ---------------------------------------------------------
@pytest.fixture(scope="module")
def bug_labd() -> Iterator[Daemon]:
    """A labd for the known bugs, apart: some leave tracebacks in its log, which each test
    below checks for itself (its own part of the log)."""
    for d in one_daemon(fakes=True):
        d.allow_tracebacks = True
        yield d


def refusal(conn: rpyc.Connection, *args: Any) -> BaseException:
    """What spawn(*args) raises (it must raise)."""
    with pytest.raises(Exception) as info:
        conn.root.spawn(*args)
    return info.value


@pytest.mark.parametrize("key", sorted(FLOAT_PARAMS))
def test_a_json_integer_too_large_for_a_float_is_a_param_error(bug_labd: Daemon, key: str) -> None:
    log = LogSlice(bug_labd)
    with bug_labd.connect() as conn:
        error = refusal(conn, "fake", 1, json.dumps({key: 10**400}))
        assert labd_class(error) is E.ParamError, one_line(error)
        assert key in one_line(error)
    log.assert_clean()


@pytest.mark.parametrize("text", [nested(5000, "["), nested(5000, "{")], ids=["list", "object"])
def test_deeply_nested_params_json_is_a_usage_error(bug_labd: Daemon, text: str) -> None:
    log = LogSlice(bug_labd)
    with bug_labd.connect() as conn:
        error = refusal(conn, "fake", 1, text)
        assert labd_class(error) is not None, f"{type(error).__mro__[1]}: {one_line(error)}"
        assert issubclass(labd_class(error) or type, E.UsageError), one_line(error)
        assert call(conn, "version")["pid"] == bug_labd.pid
    log.assert_clean()


def test_a_name_that_is_not_utf8_is_stored_or_refused(bug_labd: Daemon) -> None:
    log = LogSlice(bug_labd)
    with bug_labd.connect() as conn:
        try:
            sid = spawn(conn, 1, json.dumps({"name": "lab\udcff", "interval": 0.05}))
        except E.LabError as exc:
            assert labd_class(exc) is E.ParamError, one_line(exc)
        else:
            call(conn, "stop", (sid,))
    log.assert_clean()


@pytest.mark.parametrize("value", ["fork\nserver", "fork\udcff"], ids=["newline", "not-utf8"])
def test_a_refused_choice_is_quoted_in_one_line(bug_labd: Daemon, value: str) -> None:
    log = LogSlice(bug_labd)
    with bug_labd.connect() as conn:
        error = refusal(conn, "fake", 1, json.dumps({"start_method": value}))
        assert labd_class(error) is E.ParamError, f"{type(error).__mro__[1]}: {error.args}"
        assert "start_method" in one_line(error)
        assert call(conn, "version")["pid"] == bug_labd.pid  # the same connection
    assert "dropped a client" not in log.text()
    log.assert_clean()


def test_a_set_paced_faster_than_3ms_stops_promptly(bug_labd: Daemon) -> None:
    log = LogSlice(bug_labd)
    bound = 3.0  # a fake set stops in well under a second
    with bug_labd.connect() as conn:
        sid = spawn(conn, 1, json.dumps({"interval": 0.001}))
        wait_for(lambda: call(conn, "status", (sid,))[0]["attempted"] > 10, 10, "increments")
        workers = [psutil.Process(p["pid"]) for p in call(conn, "inspect", sid)["processes"]]
        other = bug_labd.connect()
        pending = rpyc.async_(other.root.stop)((sid,))
        pending.set_expiry(bound)
        final = None
        try:
            (final,) = json.loads(pending.value)
        except TimeoutError:
            pass
        finally:
            # labd may wait for them for a minute more: end them, and the stop ends too
            for p in workers:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            wait_for(lambda: state_of(conn, sid) == "stopped", 20, "the stop to end")
            other.close()
        assert final is not None, f"stop took more than {bound} s"
        procs = call(conn, "inspect", sid)["processes"]
        assert all(p["exitcode"] == 0 for p in procs), procs
    log.assert_clean()


def test_a_tiny_interval_is_refused_or_works(bug_labd: Daemon) -> None:
    log = LogSlice(bug_labd)
    with bug_labd.connect() as conn:
        try:
            sid = spawn(conn, 1, json.dumps({"interval": 5e-324}))
        except E.LabError as exc:
            assert labd_class(exc) is E.ParamError, one_line(exc)
        else:
            ended = wait_for(
                lambda: (
                    (s := call(conn, "status", (sid,))[0])["attempted"] > 10
                    or s["state"] not in ("starting", "running")
                ),
                10,
                "increments, or the set to end",
            )
            state = state_of(conn, sid)
            with contextlib.suppress(E.SetBusy):
                call(conn, "stop", (sid,))
            assert ended and state == "running", f"the set is {state}"
    log.assert_clean()


@pytest.fixture
def bug_state(bug_labd: Daemon, no_autostart: None) -> Iterator[State]:
    state = State(Target(Address(path=bug_labd.socket)), interactive=True)
    yield state
    state.close()


def test_labctl_spawn_of_a_mechanism_name_that_is_not_utf8(bug_state: State) -> None:
    code, _out, err = run_line(["spawn", "fake\udcff", "1"], bug_state)
    assert code in (1, 2), (code, err)
    assert err.startswith("labctl: ") and "internal error" not in err, err


def test_labctl_usage_errors_are_one_line_whatever_the_words(bug_state: State) -> None:
    code, _out, err = run_line(["inspect", "1", "2\n3"], bug_state)
    assert code == 2
    assert err.startswith("labctl: ") and err.endswith("\n") and not has_line_break(err[:-1]), err


def test_labctl_refuses_words_that_are_not_utf8_before_sending_them(
    bug_labd: Daemon, bug_state: State
) -> None:
    # labd would refuse the label too (a ParamError), but labctl says so first: exit 2
    code, out, err = run_line(["spawn", "fake", "1", "interval=0.05", "label=lab\udcff"], bug_state)
    assert (code, out) == (2, ""), (code, out, err)
    assert err == "labctl: an argument is not UTF-8 text: b'label=lab\\xff'\n", err
    with bug_labd.connect() as conn:
        assert call(conn, "status") == [] or all(
            s["params"].get("label") != "lab\udcff" for s in call(conn, "status")
        )
