"""What labd and labctl agree on: addresses, default paths, JSON keys (stdlib only).

labctl imports this module and :mod:`labd.errors`, nothing else of the daemon, so that a
one-shot command starts fast.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from labd.errors import UsageError

DEFAULT_PORT = 18861
MAX_CLIENTS = 256  # connections labd serves at once (labd --max-clients)
#: Bounds of a stop, in seconds. Workers still making progress (a large queue draining)
#: get up to MAX_DRAIN_S per role; "stop all" waits up to WAIT_HELD_S for a set another
#: call is starting or stopping. A client's stop call waits for all of it:
MAX_DRAIN_S = 60.0
WAIT_HELD_S = 120.0
#: counters drain, the queue's end markers wait, printers drain: each up to MAX_DRAIN_S,
#: plus the SIGTERM/SIGKILL steps and a margin
STOP_CALL_TIMEOUT = WAIT_HELD_S + 3 * MAX_DRAIN_S + 60.0
#: The time labd has to stop at SIGTERM: systemd's ``TimeoutStopSec`` (the unit is
#: rendered from it), ``labd --stop-timeout``. Every set is stopped within this less
#: SHUTDOWN_MARGIN_S (draining what it can, then SIGTERM and SIGKILL, final figures
#: recorded either way); the margin is for closing the store, the Manager and exiting.
TIMEOUT_STOP_S = 20
SHUTDOWN_MARGIN_S = 5.0
#: the most counters or printers a set can have, whatever labd --max-per-set says
PER_SET_CEILING = 4096
#: labd's default limits: counters (or printers) per set, and processes in all sets.
#: High on purpose: the machine is the limit (memory, tasks, open files), checked
#: before each spawn (labd.capacity), so a spawn it cannot hold is refused with why.
MAX_PER_SET = PER_SET_CEILING
MAX_PROCESSES = 65536
#: labd --worker-nice: the sets' workers run this much nicer than labd, so that a
#: thousand of them woken at once do not keep labd from answering (1..19; 0: as labd)
WORKER_NICE = 10
PROTOCOL_VERSION = 1
#: what labd writes, instead of any rpyc frame, to a client it accepted and turns away
#: (at its connection limit, an unsuitable certificate): one line,
#: b"labd refused KIND: MESSAGE\n". Its first five bytes can never start an rpyc frame
#: (a frame's fifth byte is 0 or 1), so a client tells the two apart by them.
REFUSAL_PREFIX = b"labd refused "
REFUSAL_BUSY = "busy"  # at its connection limit: try again later
REFUSAL_DENIED = "denied"  # this client may not connect (its certificate, say)
REFUSAL_MAX = 1024  # bytes a refusal line may take
#: at most this many bytes of lines in one ``tail`` answer (fewer lines than asked for
#: then; the caller goes on after the last one it got)
TAIL_MAX_BYTES = 256 * 1024
SOCKET_NAME = "labd.sock"
#: rpyc settings both ends keep (PITFALLS): no attribute beyond the exposed API, no
#: pickle, no setattr or delattr, no class imported because a peer named it
RPYC_PROTECTIVE: dict[str, bool] = {
    "allow_public_attrs": False,
    "allow_all_attrs": False,
    "allow_pickle": False,
    "allow_setattr": False,
    "allow_delattr": False,
    "import_custom_exceptions": False,
}

# JSON keys of one set, as in `labctl status --json` and the rpyc `status()` (contract).
# The figures of a set, in this order in status objects, samples and the store (contract).
FIGURE_KEYS = (
    "value",
    "attempted",
    "lost",
    "in_flight",
    "corrupt",
    "rate",
    "latency_p50_us",
    "latency_p99_us",
)
SET_KEYS = (
    "id",
    "name",
    "mechanism",
    "variant",  # "shared 10 lock=yes": the mechanism, counters, non-default parameters
    "messages",  # whether the mechanism passes messages (in flight, latency apply)
    "state",
    "counters",
    "printers",
    "params",
    *FIGURE_KEYS,
    "sampled_at",  # time.time() when the figures were read
    "started_at",
    "stopped_at",
    "processes_alive",
    "processes_total",
)
#: inspect's record of a set adds these to SET_KEYS: each process (PROCESS_KEYS), the
#: mean memory of one worker (``{"rss", "uss"}``, bytes), the state changes, each
#: counter's increments (contract)
INSPECT_KEYS = ("processes", "memory_per_worker", "events", "per_counter")
PROCESS_KEYS = ("role", "index", "pid", "alive", "exitcode", "cpu_percent", "rss", "uss")


class State(StrEnum):
    """A set's state (contract: these strings). The allowed changes between them are
    the table in :mod:`labd.lifecycle`, the one place a set's state is changed."""

    STARTING = "starting"
    RUNNING = "running"
    DEGRADED = "degraded"  # a process died unexpectedly; the others run on
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # labd died while the set ran

    @property
    def live(self) -> bool:
        return self in LIVE_STATES


#: a parameter's value on the wire: what a JSON scalar decodes to
ParamValue = str | int | float | bool | None


class ProcessRecord(TypedDict):
    """One worker of a set, in an inspect record (contract: PROCESS_KEYS)."""

    role: str  # "counter" or "printer"
    index: int
    pid: int | None
    alive: bool
    exitcode: int | None
    cpu_percent: float | None
    rss: int | None
    uss: int | None  # unique memory: what this worker costs on its own


class FiguresRecord(TypedDict):
    """A set's figures (contract: FIGURE_KEYS)."""

    value: int
    attempted: int
    lost: int
    in_flight: int
    corrupt: int
    rate: float
    latency_p50_us: float | None
    latency_p99_us: float | None


class StatusRecord(FiguresRecord):
    """One set, as ``status()`` and ``stop()`` return it (contract: SET_KEYS)."""

    id: int
    name: str
    mechanism: str
    variant: str  # "shared 10 lock=yes": mechanism, counters, non-default parameters
    messages: bool | None  # whether in flight and latency apply (None: not known)
    sampled_at: float | None  # time.time() when the figures were read
    state: str  # a State
    counters: int
    printers: int
    params: dict[str, ParamValue]
    started_at: float | None
    stopped_at: float | None
    processes_alive: int  # one row whatever the set's size: the processes are counted,
    processes_total: int  # listed only by inspect (and status --processes)
    error: str | None  # why a set is degraded or failed
    owner: NotRequired[str | None]  # who spawned it: a user name, or a TLS subject
    containment: NotRequired[str]  # its processes: "cgroup" (its own) or "pgroup"
    #: seconds it ran (so far), by the monotonic clock; the wall times are for display
    duration: NotRequired[float | None]
    #: the mechanism's own figures (Redis: namespace, retries of op=watch, group_value)
    extra: NotRequired[dict[str, Any]]


class SpawnRecord(StatusRecord):
    """A new set, as ``spawn()`` returns it: its status, its processes (listed once) and
    what the user should know."""

    processes: list[ProcessRecord]
    warnings: list[str]  # e.g. start_method=fork in a threaded daemon


class MemoryRecord(TypedDict):
    """The mean memory of one live worker of a set, in bytes (None: none measured)."""

    rss: int | None
    uss: int | None


class EventRecord(TypedDict):
    """A state change of a set, with its time."""

    state: str
    at: float
    detail: str


class InspectRecord(StatusRecord):
    """A set in full, as ``inspect()`` returns it."""

    processes: list[ProcessRecord]
    memory_per_worker: MemoryRecord
    events: list[EventRecord]
    per_counter: NotRequired[list[int]]  # each counter's attempts, where still known


class ParamRecord(TypedDict):
    """A mechanism parameter, as in ``mechanisms()`` (contract)."""

    name: str
    type: str
    default: ParamValue
    help: str
    choices: NotRequired[list[ParamValue]]
    min: NotRequired[int | float]
    max: NotRequired[int | float]
    nullable: NotRequired[bool]


class MechanismRecord(TypedDict):
    """An installed mechanism, as in ``mechanisms()`` (contract)."""

    name: str
    summary: str
    messages: bool  # whether in_flight and latency apply
    params: list[ParamRecord]
    source: NotRequired[str]  # the distribution that provides it (set by the registry)
    error: NotRequired[str]  # why it failed to load


class TailRecord(TypedDict):
    """The printers' output, as ``tail()`` returns it: ``lines`` are ``[seq, text]``."""

    id: int
    lines: list[tuple[int, str]]
    last: int
    state: str


class HistoryRecord(TypedDict):
    """The history store's health, in ``version()``."""

    state: str  # "ok" or "degraded"
    reason: str | None  # why degraded: disk full, I/O error, locked by another process ...
    since: float | None
    pending: int  # writes waiting in memory


class VersionRecord(TypedDict):
    """Who answers, as ``version()`` returns it."""

    version: str
    protocol: int
    pid: int
    started_at: float
    address: str
    history: NotRequired[HistoryRecord]
    warnings: NotRequired[list[str]]  # labd's own trouble (a history file moved aside ...)
    containment: NotRequired[str]  # "cgroup" (a cgroup per set) or "pgroup" (labd.cgroups)


class ShutdownRecord(TypedDict):
    stopping: bool


STATES = tuple(State)
LIVE_STATES = (State.STARTING, State.RUNNING, State.DEGRADED, State.STOPPING)
FINISHED_STATES = (State.STOPPED, State.FAILED, State.INTERRUPTED)


def typed_value(value: object) -> str:
    """A parameter value as a user types it after ``KEY=`` (none, yes/no, 0.5)."""
    if value is None:
        return "none"
    if type(value) is bool:
        return "yes" if value else "no"
    if type(value) is float:
        return f"{value:g}"
    return str(value)


def refusal_line(kind: str, message: str) -> bytes:
    """The line labd writes to a client it turns away."""
    text = " ".join(message.split())
    return REFUSAL_PREFIX + f"{kind}: {text}".encode()[: REFUSAL_MAX - 20] + b"\n"


def parse_refusal(data: bytes) -> tuple[str, str] | None:
    """(kind, message) of a refusal line, or None if ``data`` is not one."""
    if not data.startswith(REFUSAL_PREFIX):
        return None
    text = data[len(REFUSAL_PREFIX) :].split(b"\n", 1)[0].decode("utf-8", "replace")
    kind, _, message = text.partition(": ")
    return kind, message.strip() or "labd refused the connection"


def runtime_dir() -> Path:
    """Where the local socket lives: systemd's RuntimeDirectory, XDG, else /tmp."""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return Path(os.environ["RUNTIME_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "ipclab"
    return Path(f"/tmp/ipclab-{os.getuid()}")


def default_socket() -> Path:
    return runtime_dir() / SOCKET_NAME


def default_state_dir() -> Path:
    """Where the history store and printer logs live."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "ipclab"


@dataclass(frozen=True)
class Address:
    """Where labd listens: a unix socket path, or a TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int = DEFAULT_PORT

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    @property
    def is_loopback(self) -> bool:
        if self.is_unix:
            return True
        assert self.host is not None
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Parse ``unix:PATH``, an absolute ``PATH``, ``HOST:PORT`` or ``[V6]:PORT``."""
    raw = text.strip()
    if not raw:
        raise UsageError("empty address (use unix:PATH, /abs/path or HOST:PORT)")
    if raw.startswith("unix:"):
        path = raw[5:]
        if not path.startswith("/"):
            raise UsageError(f"malformed address {text!r}: unix: takes an absolute path")
        return Address(path=path)
    if raw.startswith("/"):
        return Address(path=raw)
    if raw.startswith("["):
        host, sep, port = raw[1:].partition("]:")
        if not sep:
            raise UsageError(f"malformed address {text!r}: use [IPV6]:PORT")
    else:
        host, sep, port = raw.rpartition(":")
        if not sep:
            raise UsageError(f"malformed address {text!r}: use unix:PATH, /abs/path or HOST:PORT")
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise UsageError(f"malformed address {text!r}: missing or invalid host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"malformed address {text!r}: port must be 1-65535")
    return Address(host=host, port=int(port))


def tls_files(cert: str | None, key: str | None, ca: str | None) -> tuple[str, str, str] | None:
    """The --tls-cert, --tls-key and --tls-ca options (labd's and labctl's alike): all
    three, or None when none is given; a :class:`UsageError` naming the missing ones."""
    given = {"--tls-cert": cert, "--tls-key": key, "--tls-ca": ca}
    missing = [flag for flag, value in given.items() if not value]
    if len(missing) == len(given):
        return None
    if missing or not (cert and key and ca):
        raise UsageError(
            f"--tls-cert, --tls-key and --tls-ca go together: missing {', '.join(missing)}"
        )
    return cert, key, ca
