"""The code stays linted, formatted and typed (CI runs these with the suite), and the
public plugin API is what the docs promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_tool_is_clean(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_figures_have_the_contract_keys_in_order() -> None:
    from dataclasses import fields

    from labd.metrics import Figures
    from labd.protocol import FIGURE_KEYS, SET_KEYS
    from labd.store import SAMPLE_KEYS

    # and the time they were read (status' sampled_at: not a figure, not stored)
    assert tuple(f.name for f in fields(Figures)) == (*FIGURE_KEYS, "sampled_at")
    assert "sampled_at" in SET_KEYS
    assert ("at", *FIGURE_KEYS) == SAMPLE_KEYS
    assert set(FIGURE_KEYS) <= set(SET_KEYS)
    assert Figures(1, 2, 3, 4, 5, 6.0, 7.0, 8.0).row(9, 10.0) == (
        9,
        10.0,
        1,
        2,
        3,
        4,
        5,
        6.0,
        7.0,
        8.0,
    )


def test_public_plugin_api() -> None:
    import labd

    assert sorted(labd.__all__) == [
        "CounterContext",
        "Mechanism",
        "Param",
        "PrinterContext",
        "SetupEnv",
        "__version__",
    ]
    for name in labd.__all__:
        assert getattr(labd, name) is not None
    with pytest.raises(AttributeError):
        labd.Lab  # noqa: B018 - the daemon's core is not part of the plugin API


def test_records_carry_the_contract_keys() -> None:
    from labd.protocol import PROCESS_KEYS, SET_KEYS, ProcessRecord, StatusRecord

    assert set(SET_KEYS) <= set(StatusRecord.__required_keys__)
    assert set(PROCESS_KEYS) == set(ProcessRecord.__required_keys__)
