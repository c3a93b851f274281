"""Plugin validation at load, without a daemon: each contract breach is one clear error
naming the plugin (labd.registry.validate), never an exception from inside the registry."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import FakeCounter

from labd import Mechanism
from labd.errors import MechanismError
from labd.registry import Entry, Registry, validate
from labd.testing import FakeMechanism


def load_error(target: str, name: str) -> str:
    (listed,) = Registry([Entry(name, target, "tests")]).describe()
    assert listed["name"] == name and listed["source"] == "tests"
    return listed.get("error", "")


def test_a_staticmethod_counter_is_refused_at_load_by_name() -> None:
    error = load_error("fakes:StaticCounter", "static")
    assert error == (
        "mechanism 'static' failed to load: mechanism plugin 'static': counter() must be "
        "a classmethod (def counter(cls, ctx, *args)), not a staticmethod"
    )
    with pytest.raises(MechanismError, match="mechanism 'static' failed to load"):
        Registry([Entry("static", "fakes:StaticCounter", "tests")]).get("static")


def test_a_plain_method_printer_is_refused() -> None:
    class PlainPrinter(FakeCounter):
        name = "plain"

        def printer(self, ctx: Any, *args: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(MechanismError, match=r"printer\(\) must be a classmethod .* plain method"):
        validate(PlainPrinter, "plain")


def test_a_missing_hook_is_named() -> None:
    class NoCounter(Mechanism):
        name = "nocounter"
        summary = "only a printer"

        @classmethod
        def printer(cls, ctx: Any, *args: Any) -> None:
            pass

    with pytest.raises(MechanismError, match=r"'nocounter' does not implement counter\(\)"):
        validate(NoCounter, "nocounter")


def test_good_plugins_pass() -> None:
    assert validate(FakeMechanism, "fake") is FakeMechanism
    assert validate(FakeCounter, "fake") is FakeCounter
