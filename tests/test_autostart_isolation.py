"""Autostart runs the installed labd, never code from the user's working directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psutil
import pytest
from helpers import labctl_command, short_dir, wait_for

#: what a hostile (or merely stale) ``labd/`` package in the working directory does
#: if Python imports it: leave a mark, then pretend to be a daemon that fails at once
HOSTILE = """\
import os, pathlib, sys
pathlib.Path(os.environ["HOSTILE_MARK"]).write_text(str(os.getpid()))
sys.exit(42)
"""


@pytest.mark.daemon
def test_autostart_ignores_a_labd_package_in_the_working_directory(tmp_path: Path) -> None:
    cwd = tmp_path / "checkout"
    (cwd / "labd").mkdir(parents=True)
    (cwd / "labd" / "__init__.py").write_text(HOSTILE)
    (cwd / "labd" / "__main__.py").write_text(HOSTILE)
    mark = tmp_path / "imported-from-cwd"
    runtime = short_dir()  # a unix socket path must stay short
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOSTILE_MARK=str(mark))
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env.pop("PYTHONSAFEPATH", None)

    def labctl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [*labctl_command(), *args]
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=40)

    first = labctl("status")
    daemons = [p for p in psutil.process_iter(["environ"]) if _started_for(p, runtime)]
    try:
        assert not mark.exists(), "autostart imported labd/ from the working directory"
        assert first.returncode == 0, first.stderr
        assert "started labd in the background" in first.stderr
        assert len(daemons) == 1
        assert daemons[0].cwd() == "/", "the daemon keeps the user's directory busy"
    finally:
        stop = labctl("--no-autostart", "shutdown")
        wait_for(lambda: not any(p.is_running() for p in daemons), 30, "labd to exit")
    assert stop.returncode == 0, stop.stderr


def _started_for(proc: psutil.Process, runtime: Path) -> bool:
    try:
        cmd = proc.cmdline()
        return "labd" in cmd and proc.environ().get("XDG_RUNTIME_DIR") == str(runtime)
    except psutil.Error:
        return False
