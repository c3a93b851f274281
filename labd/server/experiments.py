"""The experiments' part of the rpyc API: each method checks its arguments by exact
type, calls :class:`~labd.experiments.core.Experiments`, returns JSON text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from labd.errors import UsageError
from labd.lab import Lab
from labd.owners import Caller

EXPERIMENT_API = (
    "compare",
    "experiment",
    "experiments",
    "cancel_experiment",
    "history",
    "samples",
)
MAX_SPEC = 64 * 1024
MAX_LIMIT = 10_000
ID_MAX = 2**62


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise UsageError(f"{what} must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _spec(text: object) -> dict[str, Any]:
    if type(text) is not str or len(text) > MAX_SPEC:
        raise UsageError(f"spec_json must be JSON text of at most {MAX_SPEC} characters")
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        raise UsageError("spec_json is not valid JSON (see docs/cli.md, compare)") from None
    if type(spec) is not dict:
        raise UsageError("spec_json must be a JSON object")
    return spec


class ExperimentMethods:
    """Mixed into :class:`~labd.server.service.LabService` (which gives ``_lab`` and
    ``_guard``)."""

    _lab: Lab
    _caller: Caller
    _guard: Callable[[Callable[[], Any]], str]

    def exposed_compare(self, spec_json: object) -> str:
        spec = _spec(spec_json)
        return self._guard(lambda: self._lab.experiments.compare(spec, self._caller))

    def exposed_experiment(self, exp_id: object) -> str:
        eid = _int(exp_id, "experiment id", 1, ID_MAX)
        return self._guard(lambda: self._lab.experiments.get(eid))

    def exposed_experiments(self, limit: object = 20) -> str:
        n = _int(limit, "limit", 1, MAX_LIMIT)
        return self._guard(lambda: self._lab.experiments.listing(n))

    def exposed_cancel_experiment(self, exp_id: object) -> str:
        eid = _int(exp_id, "experiment id", 1, ID_MAX)
        return self._guard(lambda: self._lab.experiments.cancel(eid, self._caller))

    def exposed_history(self, limit: object = 20, mechanism: object = None) -> str:
        n = _int(limit, "limit", 1, MAX_LIMIT)
        if mechanism is not None and (type(mechanism) is not str or len(mechanism) > 100):
            raise UsageError("mechanism must be a name (a string) or None")
        return self._guard(lambda: self._lab.experiments.history(n, mechanism))

    def exposed_samples(self, set_id: object) -> str:
        sid = _int(set_id, "set id", 1, ID_MAX)
        return self._guard(lambda: self._lab.experiments.samples(sid))
