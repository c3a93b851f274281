"""The bottom toolbar and the prompt: the running sets' live figures, read from the cache.

Both are called by prompt_toolkit at every redraw, so they only read the last
:class:`~labctl.repl.cache.Snapshot`. Without colours (``NO_COLOR``, a dumb terminal)
the words still say everything: ``DISCONNECTED``, ``stale``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.formatted_text import StyleAndTextTuples, fragment_list_width

from labctl import figures, humane
from labctl.layout import cut
from labctl.repl.cache import LiveCache, Snapshot

Record = Mapping[str, Any]
STALE_AFTER = 3.0  # seconds without a fresh status() before the figures are marked stale
MAX_SHOWN = 6
WIDTH = 80
LABEL_MAX = 28  # characters of a set's name and variant in the toolbar

STYLE = {
    "prompt.name": "ansigreen bold",
    "prompt.address": "ansicyan",
    "prompt.down": "ansired",
    "bottom-toolbar": "noreverse bg:ansiblue fg:ansiwhite",
    "bottom-toolbar.id": "bold",
    "bottom-toolbar.lost": "fg:ansired bg:ansiwhite bold",
    "bottom-toolbar.none-lost": "fg:ansigreen bg:ansiwhite",
    "bottom-toolbar.down": "bg:ansired fg:ansiwhite bold",
    "bottom-toolbar.dim": "italic",
}


def set_items(s: Record) -> StyleAndTextTuples:
    """`` #3 "demo" shared 10 lock=yes 1.23k lost 0 10/s``: the set, its value, LOST
    (red above 0, green at 0) and CORRUPT where messages arrived garbled."""
    lost = s.get("lost") or 0
    name = f' "{s["name"]}"' if s.get("name") else ""
    items: StyleAndTextTuples = [
        ("class:bottom-toolbar.id", f" #{s.get('id')}"),
        ("", " " + cut(f"{name.strip()} {figures.variant(s)}".strip(), LABEL_MAX)),
        ("", f" {humane.count(s.get('value'))} "),
        ("class:bottom-toolbar.lost" if lost else "class:bottom-toolbar.none-lost",
         f"lost {humane.count(lost)}"),
    ]  # fmt: skip
    if s.get("corrupt"):
        items.append(("class:bottom-toolbar.lost", f" corrupt {humane.count(s['corrupt'])}"))
    items.append(("", f" {humane.rate(s.get('rate'))} "))
    return items


def toolbar_text(
    snap: Snapshot, address: str, now: float, width: int = WIDTH
) -> StyleAndTextTuples:
    """The toolbar for one snapshot, at most ``width`` wide (a pure function)."""
    if not snap.connected:
        why = f": {snap.problem}" if snap.problem else ""
        return [("class:bottom-toolbar.down", f" DISCONNECTED from {address}{why}; retrying ")]
    live = snap.live_sets
    if not live:
        return [("class:bottom-toolbar.dim", " no running sets (try: spawn queue 3) ")]
    tail: StyleAndTextTuples = []
    if snap.updated is not None and now - snap.updated > STALE_AFTER:
        tail.append(("class:bottom-toolbar.dim", f" stale {now - snap.updated:.0f}s"))
    items: StyleAndTextTuples = []
    shown = 0
    for s in live[:MAX_SHOWN]:
        more = [*([("", "|")] if items else []), *set_items(s)]
        left = len(live) - shown - 1
        room = width - fragment_list_width(tail) - (len(f" +{left} more (watch)") if left else 0)
        if fragment_list_width(items + more) > room:
            break
        items += more
        shown += 1
    if shown < len(live):
        items.append(("", f" +{len(live) - shown} more (watch)"))
    return items + tail


def prompt_text(snap: Snapshot, address: str) -> StyleAndTextTuples:
    """``lab> `` on this host (a unix socket), ``lab@HOST> `` for a remote labd; in red
    while labd does not answer. The full address is in the greeting and the toolbar."""
    name = "class:prompt.name" if snap.connected else "class:prompt.down"
    if address.startswith("unix:"):
        return [(name, "lab"), ("", "> ")]
    host = address.rsplit(":", 1)[0]
    where = "class:prompt.address" if snap.connected else "class:prompt.down"
    return [(name, "lab"), ("", "@"), (where, host), ("", "> ")]


class Views:
    """The prompt and the toolbar as prompt_toolkit callables over one cache."""

    def __init__(self, cache: LiveCache, address: str) -> None:
        self.cache = cache
        self.address = address

    def prompt(self) -> StyleAndTextTuples:
        return prompt_text(self.cache.snapshot(), self.address)

    def toolbar(self) -> StyleAndTextTuples:
        app = get_app_or_none()
        width = app.output.get_size().columns if app is not None else WIDTH
        return toolbar_text(self.cache.snapshot(), self.address, time.monotonic(), width)
