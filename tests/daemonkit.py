"""Real labd daemons for tests: a factory that starts them and reaps every one (and its
children), and the environment that registers the fake mechanisms of tests/fakes.py.
The fixtures in conftest.py (``labd_factory``, ``labd_daemon``, ``module_labd``) use
it; a test module that needs its own daemons imports it directly."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import TESTS, Daemon


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
