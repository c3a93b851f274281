"""Status clients for bench/scale.py: one process, T threads, each with its own
connection, each asking for the whole status at H Hz (H = 0: back to back) for S
seconds; prints one JSON line: every call's latency in seconds, when it began
(``time.monotonic()``, the clock paced workers tick on), and the errors.

    python bench/scale_clients.py KIND ADDRESS --threads T --hz H --seconds S

KIND is ``labd`` (rpyc ``status()``, JSON decoded, as labctl does), ``supervisor``
(XML-RPC ``supervisor.getAllProcessInfo()`` over its unix socket, as supervisorctl
does) or ``circus`` (the ``status`` command over its zmq endpoint, as circusctl does).
It runs under the interpreter that has the KIND's client library: this project's for
labd (rpyc), the benchmark's own environment for circus (pyzmq); supervisor's is stdlib.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from typing import Any

CALL_TIMEOUT = 30.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        if self._connection[1] is not None and self._connection[0] == host:
            return self._connection[1]
        conn = _UnixHTTPConnection(self._path, self._timeout)
        self._connection = host, conn
        return conn


def supervisor_proxy(path: str, timeout: float = CALL_TIMEOUT) -> Any:
    transport = _UnixTransport(path, timeout)
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


def labd_caller(address: str) -> Callable[[], Any]:
    from rpyc.utils.factory import unix_connect

    conn = unix_connect(address, config={"sync_request_timeout": CALL_TIMEOUT})
    status = conn.root.status
    return lambda: json.loads(status(()))


def supervisor_caller(address: str) -> Callable[[], Any]:
    proxy = supervisor_proxy(address)
    return lambda: proxy.supervisor.getAllProcessInfo()


class CircusClient:
    """circusctl's wire: a JSON command on a zmq DEALER socket, a JSON answer."""

    def __init__(self, endpoint: str) -> None:
        import zmq

        self._zmq = zmq
        self._sock = zmq.Context.instance().socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._n = 0

    def call(self, command: str, timeout: float = CALL_TIMEOUT, **props: Any) -> dict[str, Any]:
        self._n += 1
        ident = f"{id(self)}-{self._n}"
        self._sock.send(json.dumps({"id": ident, "command": command, "properties": props}).encode())
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000)):
                raise TimeoutError(f"circus gave no answer to {command} within {timeout:g} s")
            answer: dict[str, Any] = json.loads(self._sock.recv())
            if answer.get("id") in (ident, None):
                if answer.get("status") == "error":
                    raise RuntimeError(f"circus: {answer.get('reason')}")
                return answer

    def close(self) -> None:
        self._sock.close()


def circus_caller(address: str) -> Callable[[], Any]:
    client = CircusClient(address)
    return lambda: client.call("status")


CALLERS = {
    "labd": labd_caller,
    "labd-before": labd_caller,
    "supervisor": supervisor_caller,
    "circus": circus_caller,
}


def _thread(call: Callable[[], Any], hz: float, until: float, out: dict[str, Any]) -> None:
    period = 1.0 / hz if hz > 0 else 0.0
    due = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= until:
            return
        if due > now:
            time.sleep(due - now)
        t0 = time.monotonic()
        try:
            call()
        except Exception as exc:
            out["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            continue
        t1 = time.monotonic()
        out["lat"].append(t1 - t0)  # asked within the window: counted, however late
        out["at"].append(t0)
        due = max(due + period, t1) if period else t1  # late: next call at once, no burst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(CALLERS))
    ap.add_argument("address")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hz", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--start-at", type=float, default=0.0, help="time.time() to begin at")
    args = ap.parse_args()
    out: dict[str, Any] = {"lat": [], "at": [], "errors": []}
    calls = []
    for _ in range(args.threads):  # imported and connected before the window opens
        try:
            calls.append(CALLERS[args.kind](args.address))
        except Exception as exc:
            out["errors"].append(f"connect: {type(exc).__name__}: {exc}")
    out["late"] = bool(args.start_at) and time.time() > args.start_at
    if args.start_at:
        time.sleep(max(0.0, args.start_at - time.time()))
    until = time.monotonic() + args.seconds
    threads = [threading.Thread(target=_thread, args=(call, args.hz, until, out)) for call in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["nerrors"] = len(out["errors"])
    out["errors"] = out["errors"][:5]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
