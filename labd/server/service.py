"""The rpyc adapter: each exposed method checks its arguments by exact type and range,
calls :class:`~labd.lab.Lab`, and returns JSON text. Nothing else is reachable: the
attribute hook below refuses every name outside the contract, rpyc's own defaults too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import rpyc

from labd.errors import LabError, UsageError
from labd.lab import Lab
from labd.owners import LABD, caller_of
from labd.protocol import RPYC_PROTECTIVE
from labd.server.experiments import EXPERIMENT_API, ExperimentMethods

log = logging.getLogger("labd.service")

API = (
    "version",
    "mechanisms",
    "spawn",
    "status",
    "inspect",
    "explain",
    "stop",
    "tail",
    "shutdown",
    *EXPERIMENT_API,
)
MAX_IDS = 10_000
MAX_TAIL = 10_000
MAX_JSON = 64 * 1024

#: rpyc protocol config: the protective settings, and nothing of the server's own state
#: (no traceback, no version, no exception class made from a client's word) travels.
PROTOCOL_CONFIG: dict[str, Any] = {
    **RPYC_PROTECTIVE,
    "allow_getattr": True,
    "instantiate_custom_exceptions": False,
    "instantiate_oldstyle_exceptions": False,
    "include_local_traceback": False,
    "include_local_version": False,
    "propagate_SystemExit_locally": False,
    "propagate_KeyboardInterrupt_locally": False,
}


def _int(value: object, what: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise UsageError(f"{what} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise UsageError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def _str(value: object, what: str, limit: int = 200) -> str:
    if type(value) is not str:
        raise UsageError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise UsageError(f"{what} is longer than {limit} characters")
    return value


def _ids(value: object) -> tuple[int, ...]:
    if type(value) is not tuple or len(value) > MAX_IDS:
        raise UsageError("ids must be a tuple of set ids (integers)")
    return tuple(_int(i, "a set id", 1, 2**62) for i in value)


def _params(text: object) -> dict[str, object]:
    raw = _str(text, "params_json", MAX_JSON)
    try:
        params = json.loads(raw or "{}")
    except ValueError as exc:
        raise UsageError(f"params_json is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError("params_json is nested too deeply: give a flat JSON object") from None
    if type(params) is not dict:
        raise UsageError("params_json must be a JSON object of KEY: VALUE")
    for value in params.values():
        if type(value) not in (str, int, float, bool, type(None)):
            raise UsageError("parameter values must be strings, numbers, booleans or null")
    return params


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class LabService(ExperimentMethods, rpyc.Service):
    """One instance per connection (see :func:`labd.server.service_factory`)."""

    def __init__(self, lab: Lab, on_shutdown: Callable[[], None]) -> None:
        self._lab = lab
        self._on_shutdown = on_shutdown
        self._caller = LABD

    def on_connect(self, conn: rpyc.Connection) -> None:
        """Who this connection is, from the authenticator's credentials (see owners)."""
        self._caller = caller_of(conn._config.get("credentials"), self._lab.admins)

    def _rpyc_getattr(self, name: str) -> Any:
        if name in API:
            return getattr(self, "exposed_" + name)
        raise AttributeError(f"labd has no method {name!r} (its API: {', '.join(API)})")

    def _rpyc_setattr(self, name: str, value: Any) -> None:
        raise AttributeError("labd's API is read-only")

    def _rpyc_delattr(self, name: str) -> None:
        raise AttributeError("labd's API is read-only")

    @staticmethod
    def _guard(call: Callable[[], Any]) -> str:
        return LabService._guard_text(lambda: _json(call()))

    @staticmethod
    def _guard_text(call: Callable[[], str]) -> str:
        try:
            return call()
        except LabError:
            raise
        except Exception as exc:  # a bug must not leak a traceback or kill the connection
            log.exception("internal error")
            raise LabError(
                f"internal error in labd: {type(exc).__name__} (see labd's log)"
            ) from None

    def exposed_version(self) -> str:
        return self._guard(self._lab.version)

    def exposed_mechanisms(self) -> str:
        return self._guard(self._lab.mechanisms)

    def exposed_spawn(self, mechanism: object, counters: object, params_json: object = "{}") -> str:
        name = _str(mechanism, "mechanism", 100)
        if type(counters) is not int:
            raise UsageError(
                f"the number of counters must be an integer, got {type(counters).__name__}"
            )
        params = _params(params_json)
        return self._guard(lambda: self._lab.spawn(name, counters, params, self._caller))

    def exposed_status(self, ids: object = ()) -> str:
        wanted = _ids(ids)
        return self._guard_text(lambda: self._lab.status_text(wanted))  # serialised once

    def exposed_inspect(self, set_id: object) -> str:
        sid = _int(set_id, "set id", 1, 2**62)
        return self._guard(lambda: self._lab.inspect(sid))

    def exposed_explain(self, set_id: object) -> str:
        sid = _int(set_id, "set id", 1, 2**62)
        return self._guard(lambda: self._lab.explain(sid))

    def exposed_stop(self, ids: object) -> str:
        wanted: tuple[int, ...] | str = "all" if type(ids) is str and ids == "all" else _ids(ids)
        return self._guard(lambda: self._lab.stop(wanted, self._caller))

    def exposed_tail(self, set_id: object, after: object = 0, limit: object = 100) -> str:
        sid = _int(set_id, "set id", 1, 2**62)
        start = _int(after, "after", 0, 2**62)
        count = _int(limit, "limit", 1, MAX_TAIL)
        return self._guard(lambda: self._lab.tail(sid, start, count))

    def exposed_shutdown(self) -> str:
        self._caller.check_admin("shut labd down")
        log.info("shutdown requested over the API by %s", self._caller.owner)
        self._on_shutdown()
        return _json({"stopping": True})
