"""Tab completion from the click group and the poller's cache, never from the network.

Command names and their options come from the click group itself; mechanism names, the
chosen mechanism's ``KEY=`` parameters and their allowed values, set ids and group ids
(``spawn ... --on``) come from the last :class:`~labctl.repl.cache.Snapshot`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import click
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from labctl.groups import is_group_id
from labctl.repl.cache import LiveCache, Snapshot
from labctl.repl.dispatch import HELP, LEAVE, commands
from labd.protocol import LIVE_STATES, ParamRecord, StatusRecord, typed_value

ID_COMMANDS = {"stop": None, "inspect": 1, "tail": 1, "watch": None, "status": None}
GROUP_COMMANDS = {"stop", "inspect", "watch", "status"}  # they take a group id as a set id
BOOL_VALUES = ("yes", "no")


@dataclass(frozen=True)
class Line:
    """The line before the cursor: the finished words and the word being typed."""

    words: tuple[str, ...]
    current: str

    @classmethod
    def of(cls, text: str) -> Line:
        words = text.split()
        typing_a_word = bool(text) and not text[-1].isspace() and bool(words)
        current = words.pop() if typing_a_word else ""
        if words[:1] == ["labctl"]:
            words = words[1:]
        return cls(tuple(words), current)

    @property
    def positional(self) -> list[str]:
        """The arguments after the command word, options left out."""
        return [w for w in self.words[1:] if not w.startswith("-")]


class LabCompleter(Completer):
    """Completions for one line of the grammar (see the module docstring)."""

    def __init__(self, group: click.Group, cache: LiveCache) -> None:
        self.group = group
        self.cache = cache

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        line = Line.of(document.text_before_cursor)
        yield from self.candidates(line, self.cache.snapshot())

    def candidates(self, line: Line, snap: Snapshot) -> Iterator[Completion]:
        if not line.words:
            yield from _matching(line.current, [*commands(self.group), HELP, *LEAVE])
            return
        name = line.words[0]
        command = self.group.commands.get(name)
        if line.current.startswith("-") and command is not None:
            yield from _matching(line.current, _options(command))
        elif name == HELP and len(line.words) == 1:
            yield from _matching(line.current, commands(self.group))
        elif name == "spawn":
            yield from _spawn(line, snap)
        elif name in ID_COMMANDS:
            yield from _ids(line, snap)


def _matching(
    current: str, names: Iterable[str], meta: dict[str, str] | None = None
) -> Iterator[Completion]:
    for name in names:
        if name.startswith(current):
            yield Completion(
                name, start_position=-len(current), display_meta=(meta or {}).get(name, "")
            )


def _options(command: click.Command) -> list[str]:
    found = [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o[:1] == "-"]
    return [*found, "--help"]


def _spawn(line: Line, snap: Snapshot) -> Iterator[Completion]:
    """``spawn MECH N KEY=VALUE ...``: mechanisms, then nothing for N, then parameters."""
    given = line.positional
    if not given:
        summaries = {str(m.get("name")): str(m.get("summary") or "") for m in snap.mechanisms}
        yield from _matching(line.current, summaries, summaries)
        return
    mechanism = snap.mechanism(given[0])
    if len(given) < 2 or mechanism is None:
        return
    params = {str(p.get("name")): p for p in mechanism.get("params") or ()}
    key, sep, value = line.current.partition("=")
    if sep:
        if key in params:
            yield from _values(key, value, params[key])
        return
    used = {w.partition("=")[0] for w in given[2:]}
    free = {f"{k}=": _describe(p) for k, p in params.items() if k not in used}
    yield from _matching(line.current, free, free)


def _describe(param: ParamRecord) -> str:
    default = param.get("default")
    return f"{param.get('type')}, default {typed_value(default)}: {param.get('help') or ''}"


def _values(key: str, typed: str, param: ParamRecord) -> Iterator[Completion]:
    """The allowed values of one parameter (``lock=`` -> yes, no), else its default."""
    if param.get("choices") is not None:
        values = [typed_value(c) for c in param["choices"]]
    elif param.get("type") == "bool":
        values = list(BOOL_VALUES)
    else:
        values = [typed_value(param.get("default"))]
    if param.get("nullable") and "none" not in values:
        values.append("none")
    default = typed_value(param.get("default"))
    for value in values:
        if value.startswith(typed):
            yield Completion(
                f"{key}={value}",
                start_position=-len(key) - 1 - len(typed),
                display=value,
                display_meta="default" if value == default else "",
            )


def _ids(line: Line, snap: Snapshot) -> Iterator[Completion]:
    """Set ids (live ones only for ``stop``, plus ``all``), or group ids, each at most
    once; set ids and group ids are never mixed on one line (and ``watch`` takes one
    group)."""
    name = line.words[0]
    limit = ID_COMMANDS[name]
    given = line.positional
    if limit is not None and len(given) >= limit:
        return
    sets: Sequence[StatusRecord] = snap.live_sets if name == "stop" else snap.sets
    meta = {str(s.get("id")): f"{s.get('mechanism')}, {s.get('state')}" for s in sets}
    groups = _groups(name, snap) if name in GROUP_COMMANDS else {}
    if not given:
        meta |= groups
    elif any(is_group_id(w) for w in given):  # group ids given: more of them, no set ids
        meta = {} if name == "watch" else groups
    for taken in given:
        meta.pop(taken, None)
    if name == "stop" and not given:
        meta["all"] = "every running set"
    yield from _matching(line.current, meta, meta)


def _groups(command: str, snap: Snapshot) -> dict[str, str]:
    """Group ids with what they are; for ``stop``, not those whose parts this labd
    holds have all ended (parts on other labds are not asked: no network here)."""
    states: dict[str, list[str]] = {}
    for s in snap.sets:
        part = str((s.get("params") or {}).get("group") or "")
        if part:
            states.setdefault(part.partition(":")[0], []).append(str(s.get("state")))
    out = {}
    for g in snap.groups:
        gid = str(g.get("group"))
        seen = states.get(gid, [])
        if command == "stop" and seen and not any(x in LIVE_STATES for x in seen):
            continue
        on = ",".join(g.get("contexts") or ())
        out[gid] = f"group: {g.get('mechanism')} {g.get('counters')} on {on}"
    return out
