"""A set's variant in the words a user typed: ``shared 10 lock=yes interval=0``.

Status objects carry it (key ``variant``), so that every surface that shows a set can
tell the racy set from the locked one without knowing each mechanism's defaults: the
mechanism, the counters, then every parameter that differs from its default, the
mechanism's own first, in the order declared (the set's ``name`` and ``duration`` are
not part of what it is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labd.params import COMMON_PARAMS, Param

NOT_VARIANT = frozenset({"name", "duration"})


def variant(
    mechanism: str, counters: int, values: Mapping[str, Any], declared: Sequence[Param]
) -> str:
    """``MECH N KEY=VALUE ...`` for the parameters that differ from their defaults."""
    words = [mechanism, str(counters)]
    kinds = sorted(declared, key=lambda p: p.type is not bool)  # the switches first
    for p in (*kinds, *COMMON_PARAMS):
        if p.name in NOT_VARIANT or p.name not in values:
            continue
        value = values[p.name]
        if value != p.default:
            shown = f"{value:g}" if type(value) is float else p.show(value)
            words.append(f"{p.name}={shown}")
    return " ".join(words)
