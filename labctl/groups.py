"""One set spread over several labds: a *group* (``labctl spawn MECH N ... --on A,B``).

Each context runs a part: a set of its own with a share of the counters and the
parameter ``group=GID:PART/N``, which its labd records in its history like any other
parameter (the Redis counter makes the parts share one key). labctl keeps the group's
parts in ``groups.json`` in the user's state dir (mode 0600) and adds their figures:
``attempted`` summed over the parts, ``value`` read once (the shared key, as the last
part to end read it, or a live part's latest sample), ``lost = attempted - value``.

A spawn reaches every context before it starts anything, and stops the parts it
started if a later one fails: a group starts whole or not at all. A part whose labd
cannot be reached makes the group ``degraded``; the others' figures still show.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labctl.client import Client
from labctl.contexts import LOCAL, ContextError, Contexts
from labctl.target import Target, resolve_target
from labd.errors import ConnectError, LabError
from labd.protocol import LIVE_STATES, default_state_dir

FILE_NAME = "groups.json"
_GID = re.compile(r"^g[0-9a-f]{6}$")
Opener = Callable[[Target], Client]


def is_group_id(text: str) -> bool:
    return bool(_GID.match(text))


def _open(target: Target) -> Client:
    from labctl.autostart import open_client

    return open_client(target, allow_start=target.autostart)


class Groups:
    """The groups this user started, and how to reach their parts."""

    def __init__(
        self,
        contexts: Contexts | None = None,
        directory: Path | None = None,
        opener: Opener = _open,
    ) -> None:
        self.contexts = contexts or Contexts()
        self.path = (directory or default_state_dir()) / FILE_NAME
        self._open = opener

    # --- the record ----------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LabError(f"cannot read the group file {self.path}: {exc}") from None
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".groups-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, self.path)

    def record(self, gid: str) -> dict[str, Any]:
        found = self._load().get(gid)
        if not isinstance(found, dict):
            raise LabError(f"no group {gid} started from here (see: labctl status)")
        return found

    def ids(self) -> list[str]:
        return sorted(self._load())

    def summaries(self) -> list[dict[str, Any]]:
        """Each recorded group in a line's worth, newest first, from the file alone (no
        labd asked): for the REPL's completion of group ids."""
        rows = [
            {
                "group": gid,
                "mechanism": str(rec.get("mechanism", "")),
                "counters": rec.get("counters"),
                "contexts": [str(p.get("context")) for p in rec.get("parts") or ()],
                "created": float(rec.get("created") or 0.0),
            }
            for gid, rec in self._load().items()
            if is_group_id(gid) and isinstance(rec, dict)
        ]
        return sorted(rows, key=lambda r: -r["created"])

    def target(self, name: str, autostart: bool = True) -> Target:
        if name == LOCAL:
            return resolve_target(None, no_autostart=not autostart)
        return self.contexts.get(name).target()

    def connect(self, name: str, autostart: bool = True) -> Client:
        return self._open(self.target(name, autostart))

    # --- spawn ------------------------------------------------------------------------
    def spawn(
        self, mechanism: str, counters: int, params: dict[str, str], on: Sequence[str]
    ) -> dict[str, Any]:
        names = _check_on(on, counters, params)
        targets = {name: self.target(name) for name in names}  # unknown context: usage
        clients = self._connect_all(targets)
        gid = self._new_id()
        parts: list[dict[str, Any]] = []
        try:
            for i, name in enumerate(names):
                share = counters // len(names) + (1 if i < counters % len(names) else 0)
                given = {**params, "group": f"{gid}:{i + 1}/{len(names)}"}
                try:
                    created = clients[name].spawn(mechanism, share, given)
                except LabError as exc:
                    undone = self._undo(clients, parts)
                    what = f"group not started: context {name}: {exc.message}{undone}"
                    raise type(exc)(what) from None
                parts.append({"context": name, "set": created["id"], "counters": share})
            data = self._load()
            data[gid] = {
                "mechanism": mechanism,
                "counters": counters,
                "params": params,
                "parts": parts,
                "created": time.time(),
            }
            self._save(data)
            return self._figures(gid, data[gid], clients)
        finally:
            for c in clients.values():
                c.close()

    def _connect_all(self, targets: dict[str, Target]) -> dict[str, Client]:
        clients: dict[str, Client] = {}
        try:
            for name, target in targets.items():
                try:
                    clients[name] = self._open(target)
                except ConnectError as exc:
                    raise ConnectError(
                        f"group not started: context {name}: {exc.message}"
                    ) from None
        except BaseException:
            for c in clients.values():
                c.close()
            raise
        return clients

    def _undo(self, clients: dict[str, Client], parts: list[dict[str, Any]]) -> str:
        for part in parts:
            try:
                clients[part["context"]].stop((part["set"],))
            except LabError as exc:
                return f" (and stopping set {part['set']} on {part['context']} failed: {exc})"
        if not parts:
            return ""
        done = ", ".join(f"set {p['set']} on {p['context']}" for p in parts)
        return f" (stopped what had started: {done})"

    def _new_id(self) -> str:
        taken = self._load()
        while True:
            gid = "g" + secrets.token_hex(3)
            if gid not in taken:
                return gid

    # --- status and stop ---------------------------------------------------------
    def status(self, gid: str) -> dict[str, Any]:
        rec = self.record(gid)
        return self._each_part(gid, rec, lambda c, sid: c.status((sid,))[0])

    def inspect(self, gid: str) -> dict[str, Any]:
        rec = self.record(gid)
        return self._each_part(gid, rec, lambda c, sid: c.inspect(sid))

    def stop(self, gid: str) -> dict[str, Any]:
        rec = self.record(gid)
        return self._each_part(gid, rec, lambda c, sid: c.stop((sid,))[0])

    def _figures(self, gid: str, rec: dict[str, Any], clients: dict[str, Client]) -> dict[str, Any]:
        def ask(part: dict[str, Any]) -> dict[str, Any]:
            found: Any = clients[part["context"]].status((part["set"],))[0]
            return dict(found)

        return combine(gid, rec, [_answer(ask, p) for p in rec["parts"]])

    def _each_part(
        self, gid: str, rec: dict[str, Any], call: Callable[[Client, int], Any]
    ) -> dict[str, Any]:
        """Ask every part at once (a thread per context): a slow host delays no other."""
        parts = rec["parts"]
        answers: list[dict[str, Any]] = [{} for _ in parts]

        def one(i: int, part: dict[str, Any]) -> None:
            def ask(p: dict[str, Any]) -> dict[str, Any]:
                client = self.connect(p["context"])
                try:
                    return dict(call(client, int(p["set"])))
                finally:
                    client.close()

            answers[i] = _answer(ask, part)

        threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(parts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return combine(gid, rec, answers)


def _answer(
    ask: Callable[[dict[str, Any]], dict[str, Any]], part: dict[str, Any]
) -> dict[str, Any]:
    try:
        return {"context": part["context"], "set": part["set"], **ask(part)}
    except LabError as exc:
        return {"context": part["context"], "set": part["set"], "unreachable": exc.message}


def _check_on(on: Sequence[str], counters: int, params: dict[str, str]) -> list[str]:
    names = [n.strip() for n in on if n.strip()]
    if not names:
        raise ContextError("--on needs one or more contexts: --on lab1,lab2")
    if len(set(names)) != len(names):
        raise ContextError("--on names a context twice")
    if counters < len(names):
        raise ContextError(f"{counters} counters cannot be spread over {len(names)} contexts")
    if "group" in params:
        raise ContextError("group= is set by --on: leave it out")
    return names


def combine(gid: str, rec: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The group object (``--json``): its parts and their figures added up."""
    reached = [p for p in parts if "unreachable" not in p]
    states = [str(p.get("state")) for p in reached]
    ended = (
        bool(reached) and len(reached) == len(parts) and not any(s in LIVE_STATES for s in states)
    )
    attempted = sum(int(p.get("attempted") or 0) for p in reached)
    value = _value(reached, ended)
    in_flight = sum(int(p.get("in_flight") or 0) for p in reached)
    lost = attempted - value if ended else max(0, attempted - value - in_flight)
    shown = [
        {k: p.get(k) for k in ("context", "set", "state", "counters", "attempted", "value")}
        | ({"unreachable": p["unreachable"]} if "unreachable" in p else {})
        for p in parts
    ]
    out: dict[str, Any] = {
        "group": gid,
        "mechanism": rec["mechanism"],
        "counters": rec["counters"],
        "params": rec["params"],
        "parts": shown,
        "state": _state(states, len(parts) - len(reached), ended),
        "attempted": attempted,
        "value": value,
        "lost": lost,
        "in_flight": 0 if ended else in_flight,
        "rate": round(sum(float(p.get("rate") or 0.0) for p in reached), 1),
    }
    retries = [p.get("extra", {}).get("retries") for p in reached]
    if any(r is not None for r in retries):
        out["retries"] = max(int(r or 0) for r in retries)  # one shared key: read, not summed
    return out


def _value(reached: list[dict[str, Any]], ended: bool) -> int:
    """The shared key's value: as the last part to end read it, else the latest sample."""
    for p in reached:
        final = (p.get("extra") or {}).get("group_value")
        if ended and final is not None:
            return int(final)
    if not reached:
        return 0
    if ended:  # no part left the final read (one died): the last one to stop saw most
        latest = max(reached, key=lambda p: float(p.get("stopped_at") or 0.0))
        return int(latest.get("value") or 0)
    return max(int(p.get("value") or 0) for p in reached)  # the freshest sample


def _state(states: list[str], unreachable: int, ended: bool) -> str:
    if ended:
        return "stopped" if all(s == "stopped" for s in states) else "failed"
    if not states:
        return "unreachable"
    if unreachable or any(s in ("degraded", "failed", "interrupted", "stopped") for s in states):
        return "degraded"
    for s in ("starting", "stopping"):
        if s in states:
            return s
    return "running"
