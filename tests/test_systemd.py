"""labd as a systemd service: the unit passes systemd's own checks, and a real labd
speaks sd_notify (READY, STATUS, WATCHDOG, STOPPING) without leaking it to children."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from rpyc.utils.factory import unix_connect

from labd import __version__
from labd.unit import render

REPO = Path(__file__).resolve().parent.parent


def test_repository_unit_is_the_rendered_template() -> None:
    assert (REPO / "systemd/labd.service").read_text() == render("/usr/local/bin/labd")


def _unit_file(tmp_path: Path, *extra: str) -> Path:
    out = subprocess.run(
        ["labd", "install-unit", "--print", *extra], check=True, capture_output=True, text=True
    ).stdout
    path = tmp_path / "labd.service"
    path.write_text(out)
    return path


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_file(tmp_path)
    # the absolute path of the labd that is installed (behind a pyenv shim, if any, the
    # real one), and it runs
    start = re.search(r"^ExecStart=(\S+)", unit.read_text(), re.M)
    assert start is not None
    labd = Path(start[1])
    assert labd.is_absolute() and os.access(labd, os.X_OK), labd
    version = subprocess.run([labd, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith(f"labd, version {__version__}"), version.stdout
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_unit_hardening_scores_ok(tmp_path: Path) -> None:
    unit = _unit_file(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for labd.service: ([\d.]+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match.group(1)) <= 3.0


def test_user_unit_verifies_and_drops_system_only_directives(tmp_path: Path) -> None:
    unit = _unit_file(tmp_path, "--user")
    text = unit.read_text()
    assert "User=" not in text and "WantedBy=default.target" in text
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


class NotifyListener:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                for line in m.splitlines():
                    if line.startswith(prefix):
                        return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {prefix!r} among {self.messages}")
            self.sock.settimeout(left)
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(4096).decode())


@pytest.fixture
def notified_labd(tmp_path: Path):
    short = tempfile.mkdtemp(prefix="ipln")
    listener = NotifyListener(os.path.join(short, "notify"))
    sock = os.path.join(short, "labd.sock")
    env = dict(os.environ, NOTIFY_SOCKET=os.path.join(short, "notify"), WATCHDOG_USEC="200000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "labd", "--socket", sock, "--state-dir", str(tmp_path / "state")],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, listener, sock
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        listener.sock.close()
        assert proc.stderr is not None
        proc.stderr.close()
        leftovers = sorted(os.listdir(short))
        shutil.rmtree(short)
    assert leftovers == ["notify"], "labd removes its socket and private directories"


@pytest.mark.daemon
def test_sd_notify_protocol(notified_labd) -> None:
    proc, listener, sock = notified_labd
    listener.wait_for("READY=1")
    assert os.path.exists(sock), "READY=1 only once the socket listens"
    listener.wait_for("WATCHDOG=1", timeout=5)
    conn = unix_connect(sock)
    status = json.loads(conn.root.spawn("queue", 2, '{"interval": "0.1"}'))
    conn.close()
    assert "1 set(s) running" in listener.wait_for("STATUS=1 set(s)")
    for p in status["processes"]:
        env = psutil.Process(p["pid"]).environ()
        assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    proc.send_signal(signal.SIGTERM)
    listener.wait_for("STOPPING=1")
    assert proc.wait(timeout=15) == 0
