"""``labctl lesson``: a guided tour of the lesson's sections with real sets.

Each step says the lesson's claim, runs its set(s) in labd for a few seconds while it
shows their live figures, then gives the verdict with the measured numbers (whether the
claim held here, and why) and waits for Enter (not with ``--auto`` or ``--json``).
``--json`` prints one document: per step its claim, the ids of the sets it ran, the
verdict and the figures.

The race step uses ``window=`` (the time a counter holds the value between its read and
its write), so that ten counters at a slow tick lose updates every time, and says so.
"""

from __future__ import annotations

import itertools
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import click

from labctl import humane
from labctl.client import Client

Record = Mapping[str, Any]
Out = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    claim: str
    sets: tuple[tuple[str, int, tuple[str, ...]], ...]  # (mechanism, counters, KEY=VALUE)
    seconds: float
    judge: Callable[[Sequence[Record], list[str]], tuple[bool, str]]


def _lost(s: Record) -> int:
    return int(s.get("lost") or 0)


def _figures(s: Record) -> str:
    text = (
        f"value {humane.exact(s.get('value'))}, attempted {humane.exact(s.get('attempted'))}, "
        f"lost {humane.exact(s.get('lost'))}"
    )
    if s.get("corrupt"):
        text += f", corrupt {humane.exact(s.get('corrupt'))}"
    return text


def ticks(lines: Sequence[str]) -> list[int]:
    """What each tick added, from the printer's ``Time: N`` lines."""
    values = [int(t.split(":", 1)[1]) for t in lines if t.startswith("Time: ")]
    return [b - a for a, b in itertools.pairwise(values)]


def judge_one(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    s = finals[0]
    held = _lost(s) == 0 and int(s.get("attempted") or 0) > 0
    return held, f"{_figures(s)}: one writer, nothing to collide with."


def judge_race(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    s = finals[0]
    n = int(s.get("counters") or 0)
    per_tick = ticks(lines)
    seen = " ".join(f"+{d}" for d in per_tick[:8]) or "-"
    held = _lost(s) > 0
    return held, (
        f"{_figures(s)} ({humane.percent(s.get('lost'), s.get('attempted'))}). Per tick, "
        f"expected +{n}, seen {seen}: counters read the same value and wrote the same "
        "value + 1 (window=0.05 held each read 50 ms before its write, so it shows "
        f"every time; labctl explain {s.get('id')} shows each collision)."
    )


def judge_safe(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    held = all(_lost(s) == 0 and int(s.get("attempted") or 0) > 0 for s in finals)
    return held, "; ".join(f"{s.get('variant')}: {_figures(s)}" for s in finals) + (
        ": nothing lost." if held else "."
    )


def judge_join(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    s = finals[0]
    printed = len([t for t in lines if t.startswith("Time: ")])
    held = printed > 0 and _lost(s) == 0
    return held, (
        f"{_figures(s)}; the printer printed {printed} lines while the counter ran: it "
        "was started before the counter was joined. The lesson's join() before starting "
        "the printer would have printed nothing until the counter ended (never: it loops)."
    )


def judge_queue(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    cpu = [s.get("printer_cpu") for s in finals]
    held = all(_lost(s) == 0 for s in finals)
    shown = ", ".join(
        f"{s.get('variant')}: printer CPU {c:.0f}%" if isinstance(c, float) else "-"
        for s, c in zip(finals, cpu, strict=True)
    )
    return held, (
        f"nothing lost ({'; '.join(_figures(s) for s in finals)}); {shown}: the busy loop "
        "'if not q.empty(): q.get()' spins a core while it waits, get() sleeps."
    )


def judge_pipe(finals: Sequence[Record], lines: list[str]) -> tuple[bool, str]:
    own, shared = finals
    held = int(own.get("corrupt") or 0) == 0 and int(shared.get("corrupt") or 0) > 0
    return held, (
        f"one pipe per counter: corrupt {humane.exact(own.get('corrupt'))}; one shared "
        f"end: corrupt {humane.exact(shared.get('corrupt'))} of "
        f"{humane.exact(shared.get('attempted'))} (messages larger than PIPE_BUF, 4,096 "
        "bytes, are cut by other counters' bytes; they arrive garbled, not lost)."
    )


STEPS = (
    Step("one", "Shared memory, one counter",
         "A counter adds 1 to a multiprocessing.Value each tick and a printer shows it: "
         "Time: 1, 2, 3 ...", (("shared", 1, ("interval=0.2",)),), 2.0, judge_one),
    Step("race", "Ten counters racing",
         "Ten counters each add 1 a tick, so the value should grow by 10 a tick; the "
         "lesson printed 10, 18, 25, 32, because value += 1 is a read, then a write.",
         (("shared", 10, ("interval=0.5", "window=0.05", "trace=yes", "name=lesson race")),), 3.0,
         judge_race),
    Step("lock", "Then the lock",
         "Under the Value's lock each read and its write go together: nothing is lost.",
         (("shared", 10, ("interval=0.5", "window=0.02", "lock=yes", "name=lesson lock")),),
         3.0, judge_safe),
    Step("manager", "The Manager server",
         "A Value held by a server process, read and written through proxies; under a "
         "Manager lock nothing is lost.",
         (("manager", 4, ("interval=0.5", "lock=yes")),), 3.0, judge_safe),
    Step("join", "join() before the printer",
         "The lesson joined the counter before starting the printer: join() waits for "
         "the counter to end, so the printer printed nothing.",
         (("manager", 1, ("interval=0.25",)),), 2.0, judge_join),
    Step("queue", "The Queue: blocking against busy-wait",
         "Each increment is a message: nothing is lost. The lesson's printer busy-waits "
         "(if not q.empty(): q.get()) and burns a core; a blocking get() sleeps.",
         (("queue", 1, ("interval=0.5",)), ("queue", 1, ("interval=0.5", "printer=busy"))),
         3.0, judge_queue),
    Step("pipe", "The Pipe: one per counter against a shared end",
         "One pipe per counter delivers every message; counters writing one shared end "
         "garble each other's large messages.",
         (("pipe", 2, ("interval=0",)),
          ("pipe", 2, ("interval=0", "shared_end=yes", "payload=65536"))), 2.0, judge_pipe),
)  # fmt: skip
NAMES = tuple(s.name for s in STEPS)
FIGURE_KEYS = ("id", "variant", "value", "attempted", "lost", "corrupt", "printer_cpu")


def listing() -> str:
    return "\n".join(f"{i}. {s.name:<8} {s.title}" for i, s in enumerate(STEPS, 1))


def _printer_cpu(s: Record) -> float | None:
    procs = s.get("processes") or []
    return next((p.get("cpu_percent") for p in procs if p.get("role") == "printer"), None)


def _lines(client: Client, sid: int) -> list[str]:
    return [str(t) for _seq, t in client.tail(sid, 0, 1000).get("lines") or []]


def run_step(client: Client, step: Step, out: Out | None) -> dict[str, Any]:
    """Run one step's sets, show their figures each second, stop them, judge."""
    ids = []
    for mech, n, params in step.sets:
        started = client.spawn(mech, n, dict(p.split("=", 1) for p in params))
        ids.append(int(started["id"]))
    try:
        end = time.monotonic() + step.seconds
        cpu: dict[int, float | None] = {}
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            live = client.status(ids)
            for s in live:  # the busiest it was seen; inspect lists the processes
                now = _printer_cpu(client.inspect(int(s["id"])))
                seen = [c for c in (cpu.get(int(s["id"])), now) if c is not None]
                cpu[int(s["id"])] = max(seen, default=None)
            if out is not None:
                out("   " + " | ".join(f"#{s['id']} {_figures(s)}" for s in live))
        lines = _lines(client, ids[0])
    finally:
        finals: list[dict[str, Any]] = [dict(s) for s in client.stop(ids)]
    for final in finals:
        final["printer_cpu"] = cpu.get(int(final["id"]))
    held, verdict = step.judge(finals, lines)
    return {
        "step": step.name,
        "title": step.title,
        "claim": step.claim,
        "sets": ids,
        "held": held,
        "verdict": verdict,
        "figures": [{k: s.get(k) for k in FIGURE_KEYS} for s in finals],
    }


def _wrap(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 78, initial_indent="   ", subsequent_indent="   "))


def tour(
    client: Client, names: Sequence[str], *, out: Out | None, pause: bool
) -> list[dict[str, Any]]:
    """Run the named steps in the lesson's order; ``out`` None: quietly (``--json``)."""
    results = []
    chosen = [s for s in STEPS if s.name in names]
    for i, step in enumerate(chosen, 1):
        if out is not None:
            out(click.style(f"{i}/{len(chosen)} {step.title}", bold=True))
            out(_wrap(f"claim: {step.claim}"))
            for mech, n, params in step.sets:
                out(f"   running: {mech} {n} {' '.join(params)}")
        result = run_step(client, step, out)
        results.append(result)
        if out is not None:
            mark = "the claim held" if result["held"] else "the claim did NOT hold here"
            out(_wrap(f"verdict: {mark}. {result['verdict']}"))
            if pause and i < len(chosen):
                click.prompt("   Enter for the next step", default="", show_default=False)
            out("")
    return results
