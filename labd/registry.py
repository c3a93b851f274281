"""Mechanism discovery: entry points of the group ``labd.mechanisms``.

Discovered, loaded and validated at daemon start (:meth:`Registry.load_all`, so the
forkserver preloads only plugins that loaded); a plugin that fails to load is reported
by name and never takes the daemon down. Built-in mechanisms
are entry points of our own distribution, registered exactly like third-party ones.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec
from typing import Any

from labd.errors import MechanismError
from labd.mechanisms.base import Mechanism
from labd.params import COMMON_PARAMS, Param
from labd.protocol import MechanismRecord

GROUP = "labd.mechanisms"
#: extra mechanisms without packaging: "name=module:Class,name2=module:Class"
EXTRA_ENV = "LABD_EXTRA_MECHANISMS"
log = logging.getLogger("labd.registry")


@dataclass
class Entry:
    name: str
    target: str  # "module:attr"
    source: str  # the distribution that provides it
    loaded: type[Mechanism] | None = None
    error: str | None = None


def _extra_entries(spec: str) -> list[Entry]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, target = item.partition("=")
        if sep and ":" in target:
            out.append(Entry(name.strip(), target.strip(), source=EXTRA_ENV))
        else:
            log.error("ignoring %s entry %r: use name=module:Class", EXTRA_ENV, item)
    return out


def _from_entry_point(ep: EntryPoint) -> Entry:
    dist = getattr(ep, "dist", None)
    source = dist.metadata["Name"] if dist is not None else "?"
    return Entry(ep.name, ep.value, source=source)


def validate(cls: Any, name: str) -> type[Mechanism]:
    """Check a loaded plugin against the contract; raise MechanismError naming it."""
    where = f"mechanism plugin {name!r}"
    if not (isinstance(cls, type) and issubclass(cls, Mechanism)):
        raise MechanismError(f"{where} is not a labd.Mechanism subclass")
    if cls.name != name:
        raise MechanismError(f"{where}: class declares name {cls.name!r}; they must match")
    if not isinstance(cls.summary, str) or not cls.summary.strip():
        raise MechanismError(f"{where} has no summary")
    if not isinstance(cls.params, tuple) or not all(isinstance(p, Param) for p in cls.params):
        raise MechanismError(f"{where}: params must be a tuple of labd.Param")
    common = {p.name for p in COMMON_PARAMS}
    clash = [p.name for p in cls.params if p.name in common]
    if clash:
        raise MechanismError(f"{where} redeclares the common parameter {clash[0]!r}")
    for hook in ("counter", "printer"):
        _check_hook(cls, hook, where)
    return cls


def _check_hook(cls: type[Mechanism], hook: str, where: str) -> None:
    """``counter`` and ``printer`` run in a worker, called on the class: classmethods."""
    found = inspect.getattr_static(cls, hook)
    if not isinstance(found, classmethod):
        kind = (
            "a staticmethod"
            if isinstance(found, staticmethod)
            else "a plain method"
            if callable(found)
            else type(found).__name__
        )
        raise MechanismError(
            f"{where}: {hook}() must be a classmethod (def {hook}(cls, ctx, *args)), not {kind}"
        )
    if found.__func__ is inspect.getattr_static(Mechanism, hook).__func__:
        raise MechanismError(f"{where} does not implement {hook}()")


class Registry:
    """The installed mechanisms. ``entries`` is the seam for tests (no autoloading)."""

    def __init__(self, entries: Iterable[Entry] | None = None) -> None:
        if entries is None:
            entries = [_from_entry_point(ep) for ep in entry_points(group=GROUP)]
            entries += _extra_entries(os.environ.get(EXTRA_ENV, ""))
        self._entries: dict[str, Entry] = {}
        for entry in entries:
            if entry.name in self._entries:
                log.warning(
                    "mechanism %r from %s shadows the one from %s",
                    entry.name,
                    entry.source,
                    self._entries[entry.name].source,
                )
            self._entries[entry.name] = entry

    @classmethod
    def of(cls, *mechanisms: type[Mechanism], source: str = "test") -> Registry:
        """A registry holding exactly these classes (for tests and embedding)."""
        return cls(Entry(m.name, f"{m.__module__}:{m.__qualname__}", source, m) for m in mechanisms)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> type[Mechanism]:
        entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none installed"
            raise MechanismError(f"unknown mechanism {name!r} (installed: {known})")
        if entry.loaded is None and entry.error is None:
            self._load(entry)
        if entry.loaded is None:
            raise MechanismError(f"mechanism {name!r} failed to load: {entry.error}")
        return entry.loaded

    def _load(self, entry: Entry) -> None:
        module, _, attr = entry.target.partition(":")
        try:
            obj: Any = import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            entry.loaded = validate(obj, entry.name)
        except MechanismError as exc:
            entry.error = exc.args[0]
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            # a broken plugin must not take the daemon down, not even with exit()
            entry.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if entry.error:
            log.error(
                "mechanism %r (%s from %s) failed to load: %s",
                entry.name,
                entry.target,
                entry.source,
                entry.error,
            )

    def describe(self) -> list[MechanismRecord]:
        """Every installed mechanism with its parameters (contract of `mechanisms`)."""
        out = []
        for name in self.names():
            entry = self._entries[name]
            info: MechanismRecord
            try:
                info = self.get(name).describe()
                info["params"] = info["params"] + [p.describe() for p in COMMON_PARAMS]
            except MechanismError as exc:
                info = {
                    "name": name,
                    "summary": "",
                    "messages": False,
                    "params": [],
                    "error": exc.args[0],
                }
            info["source"] = entry.source
            out.append(info)
        return out

    def load_all(self) -> None:
        """Load and validate every mechanism now (failures are recorded, not raised)."""
        for entry in self._entries.values():
            if entry.loaded is None and entry.error is None:
                self._load(entry)

    def modules(self) -> list[str]:
        """Modules of the mechanisms that loaded (safe for the forkserver to preload:
        it survives only ImportError, so a plugin that raises must never be preloaded)."""
        warm = [e for e in self._entries.values() if e.loaded and e.loaded.forkserver_preload]
        out = [e.target.partition(":")[0] for e in warm]
        extra = {m for e in warm if e.loaded for m in e.loaded.preload}
        return out + sorted(m for m in extra if _installed(m))


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False
