"""Fake mechanisms for the tests, registered through the real registry.

In-process: ``Registry.of(FakeCounter, ...)``. In a real labd: the environment variable
``LABD_EXTRA_MECHANISMS`` (see :data:`EXTRA_MECHANISMS`) with this directory on
``PYTHONPATH``. They implement the plugin contract of :mod:`labd.mechanisms.base`, except
the deliberately broken ones, which prove that a bad plugin is reported by name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from labd import CounterContext, Param, PrinterContext, SetupEnv
from labd.testing import FakeMechanism


class FakeCounter(FakeMechanism):
    """labd.testing's exact fake (``lost == 0``) with knobs for the tests."""

    summary = "a RawValue incremented under an explicit Lock (tests only)"
    params = (
        Param(
            "slow_stop",
            float,
            0.0,
            "seconds a counter lingers once asked to stop",
            min=0.0,
            max=10.0,
        ),
        Param("label", str, "", "free text, ignored"),
        Param("level", int, 1, "an int in 1..5, ignored", min=1, max=5),
        Param("helper", bool, False, "each counter starts `sleep 600` and leaves it behind"),
        Param("setup_delay", float, 0.0, "seconds setup() takes (a slow spawn)", min=0, max=30),
        Param("shout", int, 0, "each printer tick also prints a line this long", min=0, max=8192),
        Param("start_delay", float, 0.0, "seconds a counter waits before it counts", min=0, max=30),
    )

    def setup(self, env: SetupEnv) -> None:
        if self.values.get("setup_delay"):
            time.sleep(float(self.values["setup_delay"]))
        super().setup(env)

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        if ctx.values.get("helper"):  # a plugin's helper process its counter forgets
            subprocess.Popen(["sleep", "600"], stdin=subprocess.DEVNULL)
        time.sleep(float(ctx.values.get("start_delay", 0.0)))  # a worker slow to start
        super().counter(ctx, *args)
        linger = float(ctx.values.get("slow_stop", 0.0))
        if linger:
            time.sleep(linger)  # a counter slow to exit (what the fake simulates)

    @classmethod
    def printer(cls, ctx: PrinterContext, *args: Any) -> None:
        shout = int(ctx.values.get("shout", 0))
        if not shout:
            super().printer(ctx, *args)
            return
        (value,) = args
        for _ in ctx.ticks(phase=0.5):
            ctx.show(value.value)
            # a plugin may print what it likes, as long as it likes (random: incompressible)
            os.write(1, os.urandom(shout // 2 + 1).hex()[:shout].encode() + b"\n")


CRASH_CODE = 3


class CrashingCounter(FakeCounter):
    """Counters exit with code 3 after ``crash_after`` increments (only counter
    ``crash_index``, or every one with -1)."""

    name = "crashing"
    summary = "FakeCounter whose counters exit with code 3 (tests only)"
    params = (
        Param(
            "crash_after",
            int,
            3,
            "increments before the counter exits with code 3",
            min=1,
            max=1_000_000,
        ),
        Param("crash_index", int, -1, "which counter crashes (-1: every one)", min=-1, max=255),
    )

    @classmethod
    def counter(cls, ctx: CounterContext, *args: Any) -> None:
        value, lock = args
        who = int(ctx.values.get("crash_index", -1))
        left = int(ctx.values.get("crash_after", 3)) if who in (-1, ctx.index) else -1
        for n in ctx.batches():
            for _ in range(n):
                with lock:
                    value.value += 1
                left -= 1
                if left == 0:
                    sys.exit(CRASH_CODE)


class BrokenSetup(FakeCounter):
    """``setup`` raises: the set must fail cleanly and the daemon go on."""

    name = "broken_setup"
    summary = "setup raises RuntimeError (tests only)"
    params = ()
    SETUP_ERROR = "setup exploded on purpose"

    def setup(self, env: SetupEnv) -> None:
        raise RuntimeError(self.SETUP_ERROR)


class WrongName(FakeCounter):
    """Violates the contract: registered as ``wrongname`` but declares another name."""

    name = "not_its_entry_name"
    summary = "declares a name other than its entry point's (tests only)"
    params = ()


class StaticCounter(FakeCounter):
    """Violates the contract: ``counter`` is a staticmethod, not a classmethod."""

    name = "static"
    summary = "a staticmethod counter (tests only)"
    params = ()

    @staticmethod
    def counter(ctx: CounterContext, *args: Any) -> None:  # type: ignore[override]
        pass


class NotAMechanism:
    """Violates the contract: not a Mechanism subclass at all."""

    name = "notamech"


#: name=module:Class entries for LABD_EXTRA_MECHANISMS (tests/ must be on PYTHONPATH)
EXTRA_MECHANISMS = ",".join(
    f"{name}=fakes:{cls}"
    for name, cls in (
        ("fake", "FakeCounter"),
        ("crashing", "CrashingCounter"),
        ("broken_setup", "BrokenSetup"),
        ("wrongname", "WrongName"),
        ("notamech", "NotAMechanism"),
        ("missing", "NoSuchClass"),
    )
)
BAD = ("wrongname", "notamech", "missing")
