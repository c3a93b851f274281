"""The one exception tree of ipclab, shared by labd and labctl (stdlib only).

::

    LabError                    a request failed; exit code 1 (``exit_code``) unless said otherwise
    ├── UsageError              bad arguments to a command or an API call
    │   ├── MechanismError      unknown mechanism, or one that failed to load
    │   └── ParamError          unknown parameter key, wrong type, out of range
    ├── LimitError              a per-set or global process limit would be exceeded
    ├── SetError                about one set
    │   ├── NoSuchSet           no set with that id, live or in the history
    │   └── SetBusy             a conflicting operation is already under way
    ├── NotAllowed              the caller may not do that (another user's set, shutdown)
    ├── NoSuchExperiment        no experiment with that id
    ├── HistoryError            the history store takes no writes now (disk full, ...)
    ├── ConfigError             labd cannot start as configured (bad socket, TLS ...): 2
    │   └── StoreDamaged        the history file is damaged or read-only (moved aside)
    └── ConnectError            labctl cannot reach labd: 3
        └── BusyError           labd is at its connection limit: 4

Every exception keeps its data in ``args`` (the first item is the one-line,
user-facing message), because rpyc rebuilds exceptions on the client without
calling ``__init__``.  The message names the object and says what to do.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_BUSY = 4  # labd is at its connection limit: try again later
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class LabError(Exception):
    """Base of every error ipclab reports to a user."""

    exit_code = EXIT_FAILED

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class UsageError(LabError):
    """Arguments that can never succeed: fix the command."""


class MechanismError(UsageError):
    """Unknown mechanism, or a mechanism plugin that failed to load."""


class ParamError(UsageError):
    """Unknown parameter key, a value of the wrong type, or one out of range."""


class LimitError(LabError):
    """A per-set or global limit on processes would be exceeded."""


class SetError(LabError):
    """An operation on one process set failed."""


class NoSuchSet(SetError):
    """No set with that id, neither live nor in the history."""


class SetBusy(SetError):
    """Another operation on the same set is under way."""


class NotAllowed(LabError):
    """The caller may not do this: stop another user's set, shut labd down."""


class NoSuchExperiment(LabError):
    """No experiment with that id."""


class HistoryError(LabError):
    """The history store cannot take writes now; labd refuses new sets until it can."""


class ConfigError(LabError):
    """labd cannot start as configured: a usage error of labd's own command line."""

    exit_code = EXIT_USAGE


class StoreDamaged(ConfigError):
    """The history file is damaged or cannot be written: labd moves it aside."""


class ConnectError(LabError):
    """labctl cannot reach labd."""

    exit_code = EXIT_UNREACHABLE


class BusyError(ConnectError):
    """labd answered, but is at its connection limit: try again later."""

    exit_code = EXIT_BUSY


def message_of(exc: BaseException) -> str:
    """The one-line user message of any exception, never a traceback.

    rpyc appends the remote traceback to ``str()`` of a remote exception; the first
    line of the first argument is what the daemon meant to say.
    """
    if exc.args and isinstance(exc.args[0], str):
        text = exc.args[0]
    else:
        text = str(exc) or type(exc).__name__
    first = text.strip().splitlines()
    return first[0] if first else type(exc).__name__


_SSL_NOISE = re.compile(r"^\[[\w: ]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def ssl_reason(exc: BaseException) -> str:
    """Why a TLS step failed, in plain words: ``certificate verify failed``, not
    ``[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed (_ssl.c:1006)``; for
    a plain OS error (a missing file), its own words."""
    reason = getattr(exc, "reason", None)  # ssl.SSLError's, without importing ssl here
    if reason:
        return str(reason).lower().replace("_", " ")
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else message_of(exc)
    return _SSL_NOISE.sub("", text).strip().lower() or type(exc).__name__
