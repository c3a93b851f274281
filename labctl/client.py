"""One rpyc connection to labd, with its JSON answers decoded and its errors made ours.

The daemon's API (a contract, see docs/cli.md) takes and returns plain values; each
method returns JSON text, which :class:`Client` decodes. A remote :mod:`labd.errors`
exception arrives as an instance of the class imported here (rpyc builds it without
``__init__``) and is raised again as a fresh instance of that class carrying only the
one-line message, so no remote traceback ever reaches a user.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, Literal, cast

import rpyc
from rpyc.core.stream import SocketStream
from rpyc.utils.factory import connect_stream

import labd.errors as errors  # imported before connecting, so rpyc can rebuild its classes
from labctl.tls import TlsFiles, UnsuitableCertificate, check_server_usage, client_context
from labd.errors import BusyError, ConnectError, LabError, message_of, ssl_reason
from labd.protocol import (
    PER_SET_CEILING,
    REFUSAL_BUSY,
    REFUSAL_MAX,
    REFUSAL_PREFIX,
    RPYC_PROTECTIVE,
    STOP_CALL_TIMEOUT,
    Address,
    InspectRecord,
    MechanismRecord,
    ShutdownRecord,
    SpawnRecord,
    StatusRecord,
    TailRecord,
    VersionRecord,
    parse_refusal,
)

CALL_TIMEOUT = 30.0
STOP_TIMEOUT = STOP_CALL_TIMEOUT  # what labd's longest stop may take, and a margin
#: a spawn waits for every worker to start: ~60 ms each under forkserver on a busy host,
#: so it gets a budget of its own, by the set's size, far above that
SPAWN_BASE_S = 60.0
SPAWN_PER_PROCESS_S = 0.5

RPYC_CONFIG: dict[str, Any] = {
    **RPYC_PROTECTIVE,
    "instantiate_custom_exceptions": True,  # labd.errors classes, imported above
    "sync_request_timeout": CALL_TIMEOUT,
}


def unreachable(address: Address, reason: str | None = None) -> ConnectError:
    """The one-line error for a daemon that does not answer."""
    if reason:
        return ConnectError(f"cannot reach labd at {address}: {reason}")
    return ConnectError(
        f"cannot reach labd at {address}: is it running? "
        "(start it with: labd, or systemctl status labd)"
    )


ExperimentRecord = dict[str, Any]  # experiments, history rows, samples (docs/cli.md)


def spawn_budget(counters: int, params: dict[str, str]) -> float:
    """How long a spawn of this size may take before labctl stops waiting."""
    printers = str(params.get("printers", "1"))
    extra = int(printers) if printers.isdecimal() else 1
    most = 2 * PER_SET_CEILING  # labd refuses more at once, at once
    return SPAWN_BASE_S + SPAWN_PER_PROCESS_S * min(max(counters, 0) + extra, most)


class Refused(EOFError):
    """labd accepted the connection and turned it away, saying why in one line."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind

    def error(self, address: Address) -> ConnectError:
        text = str(self.args[0])
        if text.startswith("labd "):
            text = f"labd at {address} {text[5:]}"
        else:
            text = f"labd at {address} refused the connection: {text}"
        return BusyError(text) if self.kind == REFUSAL_BUSY else ConnectError(text)


class LabStream(SocketStream):  # type: ignore[misc]  # rpyc ships no types
    """rpyc's socket stream, reading labd's refusal line where the first frame would be.

    labd refuses after accepting (at its connection limit, say) by writing one line and
    closing. It comes when the client first reads, or, if labd closed before the client
    wrote its request, it is waiting to be read when that write fails.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self._first = True

    def read(self, count: int) -> bytes:
        data: bytes = super().read(count)
        if self._first:
            self._first = False
            if data and REFUSAL_PREFIX.startswith(data[: len(REFUSAL_PREFIX)]):
                raise self._refusal(data) or EOFError("labd sent no rpyc")
        return data

    def write(self, data: bytes) -> None:
        try:
            while data:
                data = data[self.sock.send(data[: self.MAX_IO_CHUNK]) :]
        except OSError as exc:
            refused = self._refusal(b"") if self._first else None
            self.close()
            raise refused or EOFError(exc) from None

    def _refusal(self, head: bytes) -> Refused | None:
        """The rest of a refusal line (``head`` is what was read of it), if any."""
        buf = head
        deadline = time.monotonic() + 1.0
        with contextlib.suppress(OSError, ValueError):
            while b"\n" not in buf and len(buf) < REFUSAL_MAX:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = self.sock.recv(REFUSAL_MAX)
                if not chunk:
                    break
                buf += chunk
        self.close()
        parsed = parse_refusal(buf)
        return Refused(*parsed) if parsed else None


class Client:
    """The daemon's API as Python calls; one connection, used by one thread."""

    def __init__(
        self,
        conn: Any,
        address: Address,
        call_timeout: float = CALL_TIMEOUT,
        spawn_timeout: float | None = None,
    ) -> None:
        self._conn = conn
        self.address = address
        self.call_timeout = call_timeout  # stop() waits up to STOP_TIMEOUT instead
        self.spawn_timeout = spawn_timeout  # None: by the set's size (spawn_budget)
        self._methods: dict[str, Any] = {}
        self._broken = False

    @property
    def closed(self) -> bool:
        """True once the connection is gone: the caller should connect again."""
        return self._broken or bool(self._conn.closed)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken stream may fail again
            self._conn.close()

    # The records are the daemon's JSON as it sent it: typed as labd.protocol says, but a
    # newer or older daemon may send more or fewer keys, so readers use .get() for extras.
    def version(self) -> VersionRecord:
        return cast(VersionRecord, self._call("version"))

    def mechanisms(self) -> list[MechanismRecord]:
        return cast(list[MechanismRecord], self._call("mechanisms"))

    def spawn(self, mechanism: str, counters: int, params: dict[str, str]) -> SpawnRecord:
        budget = self.spawn_timeout or spawn_budget(counters, params)
        text = self._call("spawn", mechanism, counters, json.dumps(params), timeout=budget)
        return cast(SpawnRecord, text)

    def status(self, ids: Sequence[int] = ()) -> list[StatusRecord]:
        return cast(list[StatusRecord], self._call("status", tuple(ids)))

    def inspect(self, set_id: int) -> InspectRecord:
        return cast(InspectRecord, self._call("inspect", set_id))

    def explain(self, set_id: int) -> dict[str, Any]:
        return cast(dict[str, Any], self._call("explain", set_id))

    def stop(self, ids: Sequence[int] | Literal["all"]) -> list[StatusRecord]:
        which = ids if ids == "all" else tuple(ids)
        return cast(list[StatusRecord], self._call("stop", which, timeout=STOP_TIMEOUT))

    def tail(self, set_id: int, after: int = 0, limit: int = 100) -> TailRecord:
        return cast(TailRecord, self._call("tail", set_id, after, limit))

    def shutdown(self) -> ShutdownRecord:
        return cast(ShutdownRecord, self._call("shutdown"))

    # --- experiments and history (labctl.experiments): their JSON as labd sent it ---
    def compare(self, spec: dict[str, Any]) -> ExperimentRecord:
        return cast(ExperimentRecord, self._call("compare", json.dumps(spec)))

    def experiment(self, exp_id: int) -> ExperimentRecord:
        return cast(ExperimentRecord, self._call("experiment", exp_id))

    def experiments(self, limit: int = 20) -> list[ExperimentRecord]:
        return cast(list[ExperimentRecord], self._call("experiments", limit))

    def cancel_experiment(self, exp_id: int) -> ExperimentRecord:
        return cast(ExperimentRecord, self._call("cancel_experiment", exp_id))

    def history(self, limit: int = 20, mechanism: str | None = None) -> list[ExperimentRecord]:
        return cast(list[ExperimentRecord], self._call("history", limit, mechanism))

    def samples(self, set_id: int) -> ExperimentRecord:
        return cast(ExperimentRecord, self._call("samples", set_id))

    def _call(self, name: str, *args: object, timeout: float | None = None) -> object:
        timeout = timeout or self.call_timeout
        try:
            pending = self._method(name)(*args)
            pending.set_expiry(timeout)
            text = pending.value
        except KeyboardInterrupt:
            self._broken = True  # interrupted mid-message: the stream is out of step
            raise
        except Exception as exc:
            error = self._translate(exc, f"{name}()", timeout)
            if error is exc:
                raise
            raise error from exc
        return decode(name, text)

    def _translate(self, exc: Exception, call: str, timeout: float) -> Exception:
        """Our error for what a call raised: the daemon's refusal, or a lost connection."""
        if isinstance(exc, LabError):
            return local_error(exc)
        if hasattr(exc, "_remote_tb"):  # any other exception raised in labd
            return LabError(f"labd failed: {type(exc).__name__}: {message_of(exc)}")
        if isinstance(exc, Refused):
            self._broken = True
            return exc.error(self.address)
        if isinstance(exc, TimeoutError):
            self._broken = True  # a late answer would arrive out of turn
            if call == "spawn()":  # labd is there: it is still starting the set
                return LabError(
                    f"labd at {self.address} has not finished spawn() after {timeout:g} s: "
                    "it may still be starting the set (see: labctl status, and labd's log)"
                )
            return unreachable(self.address, f"no answer to {call} within {timeout:g} s")
        if isinstance(exc, EOFError | OSError):
            self._broken = True
            return unreachable(self.address, _lost(exc))
        return exc

    def _method(self, name: str) -> Any:
        """The asynchronous proxy of a remote method, so each call can have its own expiry."""
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = rpyc.async_(getattr(self._conn.root, name))
        return method


def local_error(exc: LabError) -> LabError:
    """The same error as a plain instance of our own class, with a one-line message."""
    for cls in type(exc).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return cast(LabError, cls(message_of(exc), *exc.args[1:]))
    return LabError(message_of(exc))


def decode(name: str, text: object) -> object:
    """The Python value of a JSON answer."""
    if text is None:
        return None
    if type(text) is not str:
        raise LabError(f"labd answered {name}() with {type(text).__name__}, not JSON text")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise LabError(f"labd answered {name}() with malformed JSON: {exc}") from None


def open_socket(address: Address, tls: TlsFiles | None, timeout: float) -> socket.socket:
    """A connected socket to the daemon: unix, TCP, or TCP wrapped in mutual TLS.

    The seam for transports: everything past it speaks rpyc over a plain stream.
    """
    if address.path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address.path)
        except BaseException:
            sock.close()
            raise
        return sock
    assert address.host is not None
    context = client_context(tls) if tls is not None else None  # bad files: UsageError
    sock = socket.create_connection((address.host, address.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            secure = context.wrap_socket(sock, server_hostname=address.host)
            try:
                check_server_usage(secure.getpeercert(binary_form=True))
            except BaseException:
                secure.close()
                raise
            return secure
    except BaseException:
        sock.close()
        raise
    return sock


def connect(address: Address, tls: TlsFiles | None = None, timeout: float = 5.0) -> Client:
    """Connect to labd at ``address``; :class:`ConnectError` if nobody answers there.

    The ``__cause__`` of that error is the OS error, so a caller can tell "nobody
    listens" (``FileNotFoundError``, ``ConnectionRefusedError``) from the rest.
    """
    try:
        sock = open_socket(address, tls, timeout)
    except ssl.SSLCertVerificationError as exc:
        detail = (exc.verify_message or "verification failed").rstrip(".")
        hint = "labd tls init --host NAME" if "mismatch" in detail else "check --tls-ca"
        raise unreachable(
            address, f"labd's TLS certificate is not trusted: {detail} ({hint})"
        ) from exc
    except ssl.SSLError as exc:
        raise unreachable(address, f"TLS handshake failed: {ssl_reason(exc)}") from exc
    except UnsuitableCertificate as exc:
        raise unreachable(
            address, f"labd's TLS certificate is not accepted: {exc} (make it with labd tls init)"
        ) from exc
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise unreachable(address) from exc
    except TimeoutError as exc:
        raise unreachable(address, f"no answer within {timeout:g} s") from exc
    except OSError as exc:
        raise unreachable(address, (exc.strerror or str(exc)).lower()) from exc
    try:
        conn = connect_stream(LabStream(sock), config=RPYC_CONFIG)
    except (EOFError, OSError) as exc:
        sock.close()
        raise unreachable(address, _lost(exc)) from exc
    return Client(conn, address)


def _lost(exc: BaseException) -> str:
    """Why a connection broke; a TLS alert here is labd refusing our certificate."""
    cause = exc.args[0] if isinstance(exc, EOFError) and exc.args else exc
    if isinstance(cause, ssl.SSLError):
        return (
            f"labd ended the TLS session: {ssl_reason(cause)} "
            "(is --tls-cert signed by the CA labd trusts?)"
        )
    return f"the connection was lost ({message_of(exc)})"
