"""The PromptSession: history file, auto-suggestion, completer, prompt, toolbar, colours.

``Terminal`` carries the input and output to use (tests pass a pipe and a DummyOutput;
``None`` means the process's terminal) and where the history lives.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from labctl.repl.cache import LiveCache
from labctl.repl.completion import LabCompleter
from labctl.repl.keys import key_bindings
from labctl.repl.toolbar import STYLE, Views
from labd.protocol import default_state_dir

HISTORY_NAME = "labctl_history"


@dataclass(frozen=True)
class Terminal:
    """Where the REPL reads and draws (``None``: the real terminal) and keeps its history."""

    input: Input | None = None
    output: Output | None = None
    history: Path | None = None  # default: default_state_dir() / HISTORY_NAME


def history_at(path: Path | None) -> History:
    """The history file (its directory made private if new), or memory if it cannot be."""
    path = path or default_state_dir() / HISTORY_NAME
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        return FileHistory(str(path))
    return InMemoryHistory()


def build_session(
    group: click.Group, cache: LiveCache, address: str, terminal: Terminal
) -> PromptSession[str]:
    """The session the loop prompts with; nothing in it makes a network call."""
    views = Views(cache, address)
    return PromptSession(
        message=views.prompt,
        history=history_at(terminal.history),
        auto_suggest=AutoSuggestFromHistory(),
        completer=LabCompleter(group, cache),
        complete_while_typing=True,
        bottom_toolbar=views.toolbar,
        key_bindings=key_bindings(),
        style=Style.from_dict(STYLE),
        input=terminal.input,
        output=terminal.output,
        enable_history_search=False,
        mouse_support=False,
    )
