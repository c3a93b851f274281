"""Experiments in labd: checked and planned up front, stored, run by the runner thread.

:class:`Experiments` is the core API of the feature (the rpyc service calls it); it
owns the experiments' records and the runner, and reads sets' history from the Lab's
store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from labd.errors import HistoryError, LabError, NoSuchExperiment, NoSuchSet, NotAllowed
from labd.experiments import view
from labd.experiments.machine import machine
from labd.experiments.records import LIVE, Records
from labd.experiments.runner import Runner
from labd.experiments.spec import Limits, build_plan
from labd.owners import LABD, Caller
from labd.params import Param
from labd.protocol import LIVE_STATES

if TYPE_CHECKING:
    from labd.lab import Lab

log = logging.getLogger("labd.experiments")


class Experiments:
    def __init__(self, lab: Lab) -> None:
        self._lab = lab
        self.records = Records(lab.store)
        self.runner = Runner(lab, self.records)

    def start(self) -> None:
        try:
            gone = self.records.mark_interrupted()
        except HistoryError as exc:  # labd starts anyway, and says why
            log.error("cannot mark the experiments of an earlier labd interrupted: %s", exc)
            gone = []
        if gone:
            log.warning(
                "experiments %s were running when labd last stopped: marked interrupted",
                ", ".join(map(str, gone)),
            )
        self.runner.start()

    def close(self) -> None:
        self.runner.close()
        self.records.close()

    # --- experiments ---------------------------------------------------------------
    def compare(self, spec: dict[str, Any], caller: Caller = LABD) -> dict[str, Any]:
        """Queue an experiment; its sets will belong to ``caller`` (and count in their
        quota), and only they or an admin may cancel it."""
        plan = build_plan(spec, self._params_of, self._limits())
        start_methods = {p.given.get("start_method", "forkserver") for p in plan.points}
        where = machine(",".join(sorted(start_methods)))
        exp_id = self.records.new(spec, plan.as_dict(), where, caller.owner)
        self.runner.submit(exp_id, caller)
        log.info("experiment %d queued: %d runs", exp_id, len(plan.order))
        return self.get(exp_id)

    def get(self, exp_id: int) -> dict[str, Any]:
        record = self.records.get(exp_id)
        if record is None:
            raise NoSuchExperiment(f"no experiment {exp_id} (see: labctl experiments)")
        return view.experiment(record, self.runner.progress)

    def listing(self, limit: int) -> list[dict[str, Any]]:
        out = []
        for exp_id in self.records.ids(limit):
            record = self.records.get(exp_id)
            if record is not None:
                out.append(view.summary(record))
        return out

    def cancel(self, exp_id: int, caller: Caller = LABD) -> dict[str, Any]:
        record = self.get(exp_id)
        if record["state"] not in LIVE:
            raise LabError(f"experiment {exp_id} is already {record['state']}")
        owner = record["owner"]  # kept in the store, as a set's is
        if not caller.may_stop(owner):
            whose = f"belongs to {owner}" if owner else "has no recorded owner"
            raise NotAllowed(
                f"experiment {exp_id} {whose}: only its owner or an admin "
                f"may cancel it (you are {caller.owner})"
            )
        self.runner.cancel(exp_id)
        return self.get(exp_id)

    # --- sets' history -------------------------------------------------------------
    def history(self, limit: int, mechanism: str | None) -> list[dict[str, Any]]:
        rows = self._lab.store.history(limit, mechanism=mechanism)
        return [view.history_row(dict(r)) for r in rows]

    def samples(self, set_id: int) -> dict[str, Any]:
        row = self._lab.store.get(set_id)
        if row is None:
            raise NoSuchSet(f"no set {set_id} (see: labctl history)")
        out = view.history_row(dict(row))
        out["samples"] = [dict(x) for x in self._lab.store.samples(set_id)]
        return out

    # --- helpers -------------------------------------------------------------------
    def _params_of(self, mechanism: str) -> tuple[Param, ...]:
        return self._lab.registry.get(mechanism).params

    def _limits(self) -> Limits:
        running = sum(
            int(s["counters"]) + int(s["printers"])
            for s in self._lab.status()
            if s["state"] in LIVE_STATES
        )
        limits = self._lab.limits
        return Limits(limits.per_set, limits.total, running)
