"""The bottom toolbar and the prompt: the running sets' live figures, read from the cache.

Both are called by prompt_toolkit at every redraw, so they only read the last
:class:`~labctl.repl.cache.Snapshot`. Without colours (``NO_COLOR``, a dumb terminal)
the words still say everything: ``DISCONNECTED``, ``stale``.
"""

from __future__ import annotations

import time

from prompt_toolkit.formatted_text import StyleAndTextTuples

from labctl import humane
from labctl.repl.cache import LiveCache, Snapshot
from labd.protocol import StatusRecord

STALE_AFTER = 3.0  # seconds without a fresh status() before the figures are marked stale
MAX_SHOWN = 6

STYLE = {
    "prompt.name": "ansigreen bold",
    "prompt.address": "ansicyan",
    "prompt.down": "ansired",
    "bottom-toolbar": "noreverse bg:ansiblue fg:ansiwhite",
    "bottom-toolbar.id": "bold",
    "bottom-toolbar.lost": "fg:ansiyellow bold",
    "bottom-toolbar.down": "bg:ansired fg:ansiwhite bold",
    "bottom-toolbar.dim": "italic",
}


def set_items(s: StatusRecord) -> StyleAndTextTuples:
    lost = s.get("lost") or 0
    return [
        ("class:bottom-toolbar.id", f" #{s.get('id')}"),
        ("", f" {s.get('mechanism')} {humane.count(s.get('value'))}"),
        ("class:bottom-toolbar.lost" if lost else "", f" lost {humane.count(lost)}"),
        ("", f" {humane.rate(s.get('rate'))} "),
    ]


def toolbar_text(snap: Snapshot, address: str, now: float) -> StyleAndTextTuples:
    """The toolbar for one snapshot (a pure function, tested without a terminal)."""
    if not snap.connected:
        why = f": {snap.problem}" if snap.problem else ""
        return [("class:bottom-toolbar.down", f" DISCONNECTED from {address}{why}; retrying ")]
    live = snap.live_sets
    if not live:
        return [("class:bottom-toolbar.dim", " no running sets (try: spawn queue 3) ")]
    items: StyleAndTextTuples = []
    for s in live[:MAX_SHOWN]:
        items += [*set_items(s), ("", "|")]
    items.pop()
    if len(live) > MAX_SHOWN:
        items.append(("", f" +{len(live) - MAX_SHOWN} more (watch)"))
    if snap.updated is not None and now - snap.updated > STALE_AFTER:
        items.append(("class:bottom-toolbar.dim", f" stale {now - snap.updated:.0f}s"))
    return items


def prompt_text(snap: Snapshot, address: str) -> StyleAndTextTuples:
    """``lab@unix:/path/labd.sock> `` (the address in red while labd does not answer)."""
    where = "class:prompt.address" if snap.connected else "class:prompt.down"
    return [("class:prompt.name", "lab"), ("", "@"), (where, address), ("", "> ")]


class Views:
    """The prompt and the toolbar as prompt_toolkit callables over one cache."""

    def __init__(self, cache: LiveCache, address: str) -> None:
        self.cache = cache
        self.address = address

    def prompt(self) -> StyleAndTextTuples:
        return prompt_text(self.cache.snapshot(), self.address)

    def toolbar(self) -> StyleAndTextTuples:
        return toolbar_text(self.cache.snapshot(), self.address, time.monotonic())
