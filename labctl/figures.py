"""How a set and its figures read on every surface (status, watch, stop, the toolbar),
and the legend that explains them (``help figures``).

One number format per surface: the compact ones (status, watch, the toolbar) show
counts as ``humane.count`` (exact below 1,000, then ``1.23k``, ``4.18M``), the final ones
(stop, inspect) exact with separators, ``--json`` exact. LOST is red when above 0 and
green at 0; ``NO_COLOR`` (https://no-color.org) turns every colour off, and click drops
colours anyway when the output is not a terminal.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import Any

import click

from labctl import humane
from labd.protocol import LIVE_STATES

Record = Mapping[str, Any]
WIDTH = 80  # what a table fits when the output is not a terminal


def colour_on() -> bool:
    return not os.environ.get("NO_COLOR")


def paint(text: str, **style: Any) -> str:
    """``click.style`` unless NO_COLOR is set."""
    return click.style(text, **style) if colour_on() else text


def width() -> int:
    """The terminal's width, or 80 when stdout is not a terminal."""
    if not sys.stdout.isatty():
        return WIDTH
    return shutil.get_terminal_size((WIDTH, 24)).columns


def variant(s: Record) -> str:
    """``shared 10 lock=yes``: what the set is (the mechanism alone from an old labd)."""
    return str(s.get("variant") or s.get("mechanism") or humane.MISSING)


def label(s: Record) -> str:
    """``#3 "demo" shared 10 lock=yes``: the set's id, name if any, and variant."""
    name = f' "{s["name"]}"' if s.get("name") else ""
    return f"#{s.get('id', humane.MISSING)}{name} {variant(s)}"


def live(s: Record) -> bool:
    return s.get("state") in LIVE_STATES


def lost_colour(lost: Any) -> str | None:
    if type(lost) is not int:
        return None
    return "red" if lost > 0 else "green"


def paint_lost(lost: Any, text: str) -> str:
    colour = lost_colour(lost)
    if colour == "red":
        return paint(text, fg=colour, bold=True)
    return paint(text, fg=colour) if colour else text


def set_cell(s: Record) -> str:
    """A table's SET cell: the variant, then the name (cut first when space is short)."""
    name = f'  "{s["name"]}"' if s.get("name") else ""
    return variant(s) + name


def messages(s: Record) -> bool:
    """Whether the set's mechanism passes messages (queue, pipe): from labd, or guessed
    from its latency for a set an older labd recorded."""
    if "messages" in s:
        return bool(s["messages"])
    return s.get("latency_p50_us") is not None


def in_flight_applies(sets: Any) -> bool:
    """IN FLIGHT: messages sent and not yet received, while a message set runs."""
    return any(live(s) and messages(s) for s in sets)


def corrupt_applies(sets: Any) -> bool:
    """CORRUPT: messages that arrived garbled (a pipe's shared end)."""
    return any(
        (s.get("corrupt") or 0) > 0 or (s.get("params") or {}).get("shared_end") for s in sets
    )


LEGEND = """\
What each figure means (per set; --json gives them exact, same names):

  SET        what the set is, as you would spawn it: mechanism, counters,
             then every parameter not at its default (shared 10 lock=yes
             window=0.05), then its name in quotes if it has one
  ATTEMPTED  increments the counters performed; each counter tallies its
             own in a slot only it writes, so this is the truth
  VALUE      what the mechanism shows: the shared counter (shared,
             manager), or the messages the printers received intact
             (queue, pipe)
  LOST       updates that vanished in a race: two counters read the same
             value and both wrote value + 1 (red above 0, green at 0)
             LOST = ATTEMPTED - VALUE - IN FLIGHT - CORRUPT
  LOST%      LOST as a share of ATTEMPTED
  IN FLIGHT  while a set runs: increments under way, messages sent and not
             yet received; 0 once the set is stopped, when the accounting
             is exact
  CORRUPT    messages that arrived garbled (pipe shared_end=yes: another
             counter's bytes cut into them); they arrived, so they are not
             LOST
  RATE       increments a second over the last few ticks, from the tallies
             and the times they were read (- once the set stopped)
  P50, P99   send-to-receive latency of messages, median and 99th percentile
  LAST 20 S  (watch) the rate over the last 20 seconds, one mark per 2 s

Numbers: 999, then 1.23k, 4.18M on status, watch and the toolbar; exact
with separators (1,234,567) after stop and in inspect. explain ID tells
one set's story."""
