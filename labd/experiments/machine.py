"""The machine an experiment ran on: CPU model, cores, Python, start method, load."""

from __future__ import annotations

import os
import platform
from typing import Any


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine(start_method: str) -> dict[str, Any]:
    """Taken when an experiment starts; ``load_after`` is added when it ends."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count() or 1,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "start_method": start_method,
        "load_before": load(),
        "load_after": None,
    }
