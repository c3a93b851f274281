"""Real labd daemons for tests: a factory that starts them and reaps every one (and its
children), the environment that registers the fake mechanisms of tests/fakes.py, and
:class:`Labctl`, the real labctl command against one of them.
The fixtures in conftest.py (``labd_factory``, ``labd_daemon``, ``module_labd``) use
it; a test module that needs its own daemons imports it directly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TESTS, Daemon, labctl_command


def fakes_env(extra: str = "") -> dict[str, str]:
    """labd's environment with the fake mechanisms of tests/fakes.py registered through
    ``LABD_EXTRA_MECHANISMS`` (the real registry path for unpackaged plugins)."""
    from fakes import EXTRA_MECHANISMS

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["LABD_EXTRA_MECHANISMS"] = ",".join(filter(None, [EXTRA_MECHANISMS, extra]))
    return env


class DaemonFactory:
    """Starts labd processes and reaps every one of them (and their children)."""

    def __init__(self) -> None:
        self.daemons: list[Daemon] = []

    def __call__(
        self,
        args: tuple[str, ...] = (),
        *,
        fakes: bool = False,
        env: dict[str, str] | None = None,
        start: bool = True,
        **kw: Any,
    ) -> Daemon:
        if env is None and fakes:
            env = fakes_env()
        d = Daemon(args, env=env, **kw)
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def finish(self) -> None:
        """SIGTERM each daemon still running: it must exit 0 and leave nothing behind."""
        errors = []
        for d in self.daemons:
            if d.proc is None:
                continue
            try:
                if d.returncode is None:
                    code = d.stop(signal.SIGTERM)
                    assert code == 0, f"labd exited with {code} on SIGTERM:\n{d.log_text()}"
                    assert not os.path.exists(d.socket), f"labd left its socket {d.socket}"
                d.assert_no_leftovers()
                d.assert_clean_log()
            except AssertionError as exc:
                errors.append(str(exc))
            finally:
                d.kill_everything()
        if errors:
            pytest.fail("\n".join(errors), pytrace=False)


def one_daemon(**kw: Any) -> Iterator[Daemon]:
    """For a fixture: one labd (``kw`` as for DaemonFactory), checked and reaped after."""
    factory = DaemonFactory()
    try:
        yield factory(**kw)
    finally:
        factory.finish()


class Labctl:
    """labctl in a subprocess against one labd, with a private home."""

    def __init__(self, daemon: Daemon, home: Path, extra_env: dict[str, str] | None = None):
        self.address = f"unix:{daemon.socket}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
        self.env.update(
            XDG_RUNTIME_DIR=str(home / "run"),
            XDG_STATE_HOME=str(home / "state"),
            XDG_CONFIG_HOME=str(home / "config"),
            HOME=str(home),
            **(extra_env or {}),
        )

    def command(self, *args: str) -> list[str]:
        return [*labctl_command(), "--connect", self.address, *args]

    def run(
        self, *args: str, code: int = 0, timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        """Run it; it must exit with ``code`` and never print a traceback."""
        done = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == code, (
            f"labctl {' '.join(args)} exited {done.returncode}, not {code}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
        assert "Traceback" not in done.stderr
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def fails(self, *args: str, code: int) -> str:
        """A failing command: its one-line message on stderr."""
        done = self.run(*args, code=code)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, done.stderr
        return lines[0]
