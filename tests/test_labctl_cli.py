"""labctl's commands and exit codes: click's CliRunner, run() and a fake client (no daemon)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labctl.cli import cli, run
from labctl.state import State
from labctl.target import Target
from labd.errors import ConnectError, NoSuchSet, ParamError
from labd.protocol import Address


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real daemon, no real state dir, no labctl settings from the caller."""
    for name in ("RUNTIME_DIRECTORY", "STATE_DIRECTORY", "LABCTL_CONNECT", "LABCTL_TLS_CERT",
                 "LABCTL_TLS_KEY", "LABCTL_TLS_CA", "LABCTL_DEBUG"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def never_start_labd(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that reaches autostart fails instead of leaving a daemon behind."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("this test tried to start labd")

    monkeypatch.setattr("labctl.autostart.start_daemon", forbidden)


SET = {"id": 3, "name": "", "mechanism": "queue", "state": "running", "counters": 3,
       "value": 9, "attempted": 9, "lost": 0, "rate": 3.0}  # fmt: skip


class FakeClient:
    """Answers like labd; records calls; raises what it is told to."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.address = Address(path="/fake/labd.sock")
        self.closed = False
        self.calls: list[tuple[Any, ...]] = []
        self.fail = fail

    def _answer(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True

    def spawn(self, mechanism: str, counters: int, params: dict[str, str]) -> dict[str, Any]:
        self._answer("spawn", mechanism, counters, params)
        variant = f"{mechanism} {counters} lock=yes interval=0"
        warnings = ["start_method=fork in a threaded daemon"] if "start_method" in params else []
        return dict(SET, mechanism=mechanism, counters=counters, variant=variant, printers=1,
                    warnings=warnings)  # fmt: skip

    def status(self, ids: tuple[int, ...] = ()) -> list[dict[str, Any]]:
        self._answer("status", tuple(ids))
        return [SET]

    def stop(self, ids: Any) -> list[dict[str, Any]]:
        self._answer("stop", ids)
        return [dict(SET, state="stopped")]

    def shutdown(self) -> dict[str, Any]:
        self._answer("shutdown")
        return {"stopping": True}

    def version(self) -> dict[str, Any]:  # labctl status asks it for labd's own warnings
        return {"version": "0", "history": {"state": "ok"}, "warnings": []}


def with_fake(fake: FakeClient) -> State:
    return State(Target(fake.address), client=fake)  # type: ignore[arg-type]


def test_spawn_says_what_it_started_and_sends_values_as_typed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A bare ``3`` told a learner nothing; scripts take --json."""
    fake = FakeClient()
    code = run(["spawn", "shared", "8", "interval=0", "lock=yes"], state=with_fake(fake))
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("started set 3: shared 8 lock=yes interval=0 (8 counters, 1 printer)")
    assert "watch 3" in out
    assert fake.calls == [("spawn", "shared", 8, {"interval": "0", "lock": "yes"})]


def test_spawn_passes_labd_s_warnings_on(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient()
    assert run(["spawn", "queue", "1", "start_method=fork", "--json"], state=with_fake(fake)) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["id"] == 3
    assert captured.err.startswith("labctl: warning: start_method=fork")


def test_version_needs_no_daemon() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"labctl \d+\.\d+\.\d+\S*\n", result.output), result.output


def test_help_figures_explains_each_figure() -> None:
    result = CliRunner().invoke(cli, ["help", "figures"])
    assert result.exit_code == 0
    for word in ("ATTEMPTED", "VALUE", "LOST", "IN FLIGHT", "CORRUPT", "RATE", "SET"):
        assert f"  {word}" in result.output, word
    wide = [line for line in result.output.splitlines() if len(line) > 80]
    assert not wide, f"wider than an 80-column terminal: {wide}"


def test_json_is_one_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--json", "3"], state=with_fake(fake := FakeClient())) == 0
    assert json.loads(capsys.readouterr().out) == [SET]
    assert fake.calls == [("status", (3,))]


def test_stop_all_and_ids(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient()
    assert run(["stop", "all"], state=with_fake(fake)) == 0
    assert run(["stop", "3", "4"], state=with_fake(fake)) == 0
    assert fake.calls == [("stop", "all"), ("stop", (3, 4))]
    assert "set 3 (queue) stopped: value 9" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (NoSuchSet("no set 99 (see: labctl status)"), 1, "labctl: no set 99 (see: labctl status)"),
        (ParamError("lock='maybe' is not yes or no"), 1, "labctl: lock='maybe' is not yes or no"),
        (ConnectError("cannot reach labd at unix:/x"), 3, "labctl: cannot reach labd at unix:/x"),
        (RuntimeError("bug\nsecond line"), 1, "labctl: internal error: RuntimeError: bug"),
    ],
)
def test_errors_are_one_line_with_fixed_exit_codes(
    capsys: pytest.CaptureFixture[str], error: Exception, code: int, line: str
) -> None:
    assert run(["status"], state=with_fake(FakeClient(fail=error))) == code
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


@pytest.mark.parametrize(
    "args",
    [
        ["spawn", "queue", "x"],
        ["spawn", "queue", "3", "interval"],
        ["spawn", "queue", "3", "lock=yes", "lock=no"],
        ["spawn", "queue"],
        ["stop"],
        ["stop", "all", "3"],
        ["inspect", "seven"],
        ["tail", "1", "-n", "-1"],
        ["frobnicate"],
        ["--connect", "nowhere", "status"],
        ["--connect", "10.9.8.7:18861", "status"],
        ["--tls-cert", "c.crt", "status"],
    ],
)
def test_usage_errors_exit_2_without_connecting(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    fake = FakeClient()
    assert CliRunner().invoke(cli, args).exit_code == 2
    assert run(args, state=None if args[0].startswith("--") else with_fake(fake)) == 2
    err = capsys.readouterr().err
    assert err.startswith("labctl: ") and err.count("\n") == 1, err
    assert fake.calls == []


def test_lab_errors_keep_their_exit_code_under_cli_runner() -> None:
    result = CliRunner().invoke(cli, ["status"], obj=with_fake(FakeClient(fail=NoSuchSet("no"))))
    assert result.exit_code == 1
    assert result.stderr == "labctl: no\n"


def test_unreachable_explicit_socket_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sock = tmp_path / "nobody.sock"
    assert run(["--connect", str(sock), "status"]) == 3
    err = capsys.readouterr().err
    assert err == (
        f"labctl: cannot reach labd at unix:{sock}: is it running? "
        "(start it with: labd, or systemctl status labd)\n"
    )
    assert not (tmp_path / "state" / "ipclab" / "labd.log").exists()  # nothing was started


def test_no_autostart_at_the_default_socket_exits_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(["--no-autostart", "status"]) == 3
    assert capsys.readouterr().err.startswith(
        f"labctl: cannot reach labd at unix:{tmp_path}/run/ipclab/labd.sock: is it running?"
    )


def test_shutdown_never_starts_a_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["shutdown"]) == 3
    assert "cannot reach labd" in capsys.readouterr().err


def test_the_repl_state_refuses_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--no-autostart", "status"], state=with_fake(FakeClient())) == 2
    assert "apply when labctl starts" in capsys.readouterr().err


def test_no_command_without_a_repl_module_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "labctl.repl", None)  # import fails as if absent
    assert run([]) == 2
    assert "the REPL is not available yet" in capsys.readouterr().err


def test_help_teaches_with_examples() -> None:
    result = CliRunner().invoke(cli, ["spawn", "--help"])
    assert result.exit_code == 0
    assert "labctl spawn queue 3" in result.output
    assert "labctl spawn shared 8 interval=0 lock=yes" in result.output


def test_one_shot_imports_stay_light() -> None:
    code = (
        "import labctl.cli, sys; "
        "print(sorted(m for m in sys.modules if m.startswith(('labd','prompt_toolkit','psutil'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    ).stdout
    assert out.strip() == "['labd', 'labd.errors', 'labd.protocol']"
