"""ipclab's daemon, and the public contract for mechanism plugins.

Plugin authors import ``Mechanism``, ``Param``, ``CounterContext``, ``PrinterContext``
and ``SetupEnv`` from here. They are loaded on first use so that ``labctl``, which
imports :mod:`labd.protocol`, does not pay for the daemon's machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # plugin authors get the real types; at run time they load lazily
    from labd.mechanisms.base import Mechanism, SetupEnv
    from labd.params import Param
    from labd.worker.contexts import CounterContext, PrinterContext

__version__ = "0.4.0"

_EXPORTS = {
    "Mechanism": "labd.mechanisms.base",
    "SetupEnv": "labd.mechanisms.base",
    "Param": "labd.params",
    "CounterContext": "labd.worker.contexts",
    "PrinterContext": "labd.worker.contexts",
}
__all__ = ["CounterContext", "Mechanism", "Param", "PrinterContext", "SetupEnv", "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'labd' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
