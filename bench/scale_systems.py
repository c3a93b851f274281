"""The three process managers bench/scale.py compares, behind one small interface:
``start(n)`` (seconds until all n processes run), ``daemon_pid``, ``worker_pids()``,
``status_client`` (how a status client reaches it), ``stop_all()`` (seconds), ``close()``.

labd holds n paced counters (interval 1 s) in sets of ``set_size``, over queue, pipe,
shared and manager in turn (each set adds one printer). supervisord and circusd hold
the same n processes in programs/watchers of ``set_size``: each a Python counter
paced on the same one-second tick (``python -S -c``, the lightest honest program),
output thrown away. Both are installed from PyPI into the benchmark's own environment
(:class:`BenchVenv`), not into the project's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import PrivateLabd
from scale_clients import CircusClient, supervisor_proxy

MECHANISMS = ("queue", "pipe", "shared", "manager")
#: one line per statement, no quote, no backslash, no "%": it goes through ini files
COUNTER_CODE = (
    "import time, math\n"
    "n = 0\n"
    "while 1: time.sleep(1.0 - math.fmod(time.monotonic(), 1.0)); n += 1\n"
)
READY_TIMEOUT = 600.0


def groups(n: int, set_size: int) -> list[int]:
    """n processes in groups of set_size (the last one smaller)."""
    count = math.ceil(n / set_size)
    return [min(set_size, n - i * set_size) for i in range(count)]


def _poll(check: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


class BenchVenv:
    """A virtualenv with supervisor and circus from PyPI (``--venv DIR`` keeps it)."""

    PACKAGES = ("supervisor", "circus")

    def __init__(self, path: Path | None) -> None:
        self.keep = path is not None
        self.dir = path or Path(tempfile.mkdtemp(prefix="ipclab-scale-venv-"))
        self.python = str(self.dir / "bin" / "python")

    def ensure(self) -> None:
        if (self.dir / "bin" / "circusd").exists() and (self.dir / "bin" / "supervisord").exists():
            return
        print(f"# installing {', '.join(self.PACKAGES)} into {self.dir} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(self.dir)], check=True)
        pip = [self.python, "-m", "pip", "install", "-q", *self.PACKAGES]
        subprocess.run(pip, check=True, stdout=subprocess.DEVNULL)

    def version(self, package: str) -> str:
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        out = subprocess.run([self.python, "-c", code], capture_output=True, text=True)
        return out.stdout.strip() or "?"

    def remove(self) -> None:
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)


class Labd:
    name = "labd"
    client_kind = "labd"  # the KIND of bench/scale_clients.py
    source: str | None = None  # a directory holding another labd package (PYTHONPATH)
    args: tuple[str, ...] = ()  # more labd options (a --variant's)
    env: dict[str, str] = {}  # more environment variables for labd (a --variant's)

    def __init__(self, set_size: int, venv: BenchVenv) -> None:
        self.set_size = set_size
        self.lab = PrivateLabd("ipclab-scale-")
        saved = os.environ.get("PYTHONPATH")
        if self.source:
            os.environ["PYTHONPATH"] = self.source
        try:
            self.lab.start(args=self.args, env=self.env)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
        assert self.lab.proc is not None
        self.daemon_pid = self.lab.proc.pid
        self.client_python = sys.executable
        self.status_address = str(self.lab.socket)
        self._ids: list[int] = []

    def start(self, n: int) -> float:
        root = self.lab.conn.root
        t0 = time.monotonic()
        for k, size in enumerate(groups(n, self.set_size)):
            params = json.dumps({"interval": "1", "name": f"scale-{k}"})
            self._ids.append(json.loads(root.spawn(MECHANISMS[k % 4], size, params))["id"])
        return time.monotonic() - t0

    def worker_pids(self) -> list[int]:
        root = self.lab.conn.root
        return [
            p["pid"]
            for i in self._ids
            for p in json.loads(root.inspect(i))["processes"]
            if p["role"] == "counter" and p["alive"]
        ]

    def stop_all(self) -> float:
        t0 = time.monotonic()
        self.lab.conn.root.stop("all")
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.lab.conn.root.shutdown()
        self.lab.disconnect()
        proc = self.lab.proc
        if proc is not None:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.lab.remove()


class _External:
    """A manager run from the benchmark's venv in a temporary directory of its own."""

    name = ""

    def __init__(self, set_size: int, venv: BenchVenv) -> None:
        self.set_size = set_size
        self.venv = venv
        self.dir = Path(tempfile.mkdtemp(prefix=f"ipclab-scale-{self.name}-"))
        self.client_python = sys.executable
        self.proc: subprocess.Popen[bytes] | None = None
        self.status_address = ""
        self.daemon_pid = 0
        self._seen: list[int] = []  # worker pids, ended at close if still there

    def _run(self, command: list[str]) -> None:
        with (self.dir / "daemon.log").open("wb") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.daemon_pid = self.proc.pid

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._seen = self._seen or self.worker_pids()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(60)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the children are in its session
            proc.wait()
        for pid in self._seen:  # circus's children live in sessions of their own
            if _runs(pid, self.venv.python):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


class Supervisor(_External):
    name = "supervisor"

    def __init__(self, set_size: int, venv: BenchVenv) -> None:
        super().__init__(set_size, venv)
        self._n = 0

    def _config(self, n: int) -> Path:
        d = self.dir
        lines = [
            f"[unix_http_server]\nfile={d}/supervisor.sock\n",
            f"[supervisord]\nnodaemon=true\nlogfile={d}/supervisord.log\n"
            f"pidfile={d}/supervisord.pid\nchildlogdir={d}\nminfds=8192\nminprocs=200\n",
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        ]
        code = _escaped(COUNTER_CODE)
        for k, size in enumerate(groups(n, self.set_size)):
            lines.append(
                f"[program:set{k}]\n"
                f"command={self.venv.python} -S -c \"exec('{code}')\"\n"
                f"numprocs={size}\nprocess_name=%(program_name)s_%(process_num)03d\n"
                "autostart=false\nautorestart=false\nstartsecs=0\n"
                "stdout_logfile=NONE\nstderr_logfile=NONE\n"
            )
        path = d / "supervisord.conf"
        path.write_text("\n".join(lines))
        return path

    def start(self, n: int) -> float:
        self._n = n
        conf = self._config(n)
        self.status_address = str(self.dir / "supervisor.sock")
        self._run([str(self.venv.dir / "bin" / "supervisord"), "-c", str(conf)])
        _poll(self._answers, 30, "supervisord to answer", 0.05)
        proxy = supervisor_proxy(self.status_address, READY_TIMEOUT)
        t0 = time.monotonic()
        proxy.supervisor.startAllProcesses(False)
        _poll(lambda: self._count("RUNNING") >= n, READY_TIMEOUT, "supervisor's processes")
        return time.monotonic() - t0

    def _answers(self) -> bool:
        try:
            supervisor_proxy(self.status_address).supervisor.getState()
        except OSError:
            return False
        return True

    def _info(self) -> list[dict[str, Any]]:
        proxy = supervisor_proxy(self.status_address, READY_TIMEOUT)
        return proxy.supervisor.getAllProcessInfo()  # type: ignore[no-any-return]

    def _count(self, state: str) -> int:
        return sum(1 for p in self._info() if p["statename"] == state)

    def worker_pids(self) -> list[int]:
        self._seen = [p["pid"] for p in self._info() if p["statename"] == "RUNNING"]
        return self._seen

    def stop_all(self) -> float:
        t0 = time.monotonic()
        supervisor_proxy(self.status_address, READY_TIMEOUT).supervisor.stopAllProcesses(False)
        _poll(lambda: self._count("RUNNING") + self._count("STOPPING") == 0, 120, "the stop")
        return time.monotonic() - t0


class Circus(_External):
    name = "circus"

    def __init__(self, set_size: int, venv: BenchVenv) -> None:
        super().__init__(set_size, venv)
        self.client_python = venv.python  # pyzmq lives there
        self._watchers: list[str] = []

    def _config(self, n: int) -> Path:
        d = self.dir
        lines = [
            f"[circus]\nendpoint = ipc://{d}/ctrl.sock\npubsub_endpoint = ipc://{d}/pub.sock\n"
            "statsd = false\ncheck_delay = 5\nwarmup_delay = 0\n"
        ]
        code = _escaped(COUNTER_CODE)
        for k, size in enumerate(groups(n, self.set_size)):
            self._watchers.append(f"set{k}")
            lines.append(
                f"[watcher:set{k}]\ncmd = {self.venv.python}\n"
                f"args = -S -c \"exec('{code}')\"\nnumprocesses = {size}\n"
                "autostart = false\nwarmup_delay = 0\nrespawn = false\n"
                "close_child_stdout = true\nclose_child_stderr = true\n"
            )
        path = d / "circus.ini"
        path.write_text("\n".join(lines))
        return path

    def start(self, n: int) -> float:
        conf = self._config(n)
        self.status_address = f"ipc://{self.dir}/ctrl.sock"
        self._run([str(self.venv.dir / "bin" / "circusd"), str(conf)])
        self._client = _circus_client(self.venv, self.status_address)
        _poll(lambda: self._client.ask("status", timeout=1) is not None, 30, "circusd", 0.1)
        t0 = time.monotonic()
        for w in self._watchers:  # "start" alone starts only the autostart ones
            self._client.ask("start", timeout=READY_TIMEOUT, name=w, waiting=True)
        _poll(lambda: len(self.worker_pids()) >= n, READY_TIMEOUT, "circus's processes")
        return time.monotonic() - t0

    def worker_pids(self) -> list[int]:
        pids: list[int] = []
        for w in self._watchers:
            answer = self._client.ask("list", name=w)
            pids += [int(p) for p in (answer or {}).get("pids", [])]
        self._seen = pids or self._seen
        return pids

    def stop_all(self) -> float:
        t0 = time.monotonic()
        self._client.ask("stop", timeout=120, waiting=True)
        _poll(lambda: not self.worker_pids(), 120, "the stop")
        return time.monotonic() - t0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()
        super().close()


class _CircusBridge:
    """circus's client lives in the benchmark's venv (pyzmq): ask it through a small
    child that reads one JSON command a line and answers one JSON line."""

    def __init__(self, venv: BenchVenv, endpoint: str) -> None:
        here = Path(__file__).resolve().parent
        code = (
            "import json, sys\n"
            f"sys.path.insert(0, {str(here)!r})\n"
            "from scale_clients import CircusClient\n"
            f"c = CircusClient({endpoint!r})\n"
            "for line in sys.stdin:\n"
            "    cmd, timeout, props = json.loads(line)\n"
            "    try:\n"
            "        out = c.call(cmd, timeout, **props)\n"
            "    except TimeoutError:\n"
            "        out = None\n"
            "    print(json.dumps(out), flush=True)\n"
        )
        self._proc = subprocess.Popen(
            [venv.python, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def ask(self, command: str, timeout: float = 30.0, **props: Any) -> dict[str, Any] | None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps([command, timeout, props]) + "\n")
        self._proc.stdin.flush()
        answer: dict[str, Any] | None = json.loads(self._proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait(10)


def _circus_client(venv: BenchVenv, endpoint: str) -> _CircusBridge:
    return _CircusBridge(venv, endpoint)


def _runs(pid: int, program: str) -> bool:
    """Whether ``pid`` still runs ``program`` (not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode() == program
    except OSError:
        return False


def _escaped(code: str) -> str:
    """Python source as the body of a single-quoted literal on one line."""
    return code.replace("\\", "\\\\").replace("\n", "\\n").replace("'", "\\'")


class LabdBefore(Labd):
    """labd from another tree (``--before DIR``: e.g. ``git archive main labd``), for a
    before/after comparison in the same run."""

    name = "labd-before"


def variant(spec: str) -> str:
    """Register ``NAME=ARGS`` (``--variant``) as the system ``labd-NAME``: labd with ARGS
    more options, where a word ``VAR=value`` (VAR in capitals) sets an environment
    variable instead; returns the system's name."""
    name, sep, rest = spec.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"--variant {spec!r}: expected NAME=ARGS, e.g. nice5='--worker-nice 5'")
    words = shlex.split(rest)
    env = dict(w.split("=", 1) for w in words if _is_env(w))
    args = tuple(w for w in words if not _is_env(w))
    system = type(f"Labd_{name}", (Labd,), {"name": f"labd-{name}", "args": args, "env": env})
    SYSTEMS[system.name] = system
    return str(system.name)


def _is_env(word: str) -> bool:
    var, sep, _ = word.partition("=")
    return bool(sep) and var.isidentifier() and var.isupper()


SYSTEMS: dict[str, Any] = {
    "labd": Labd,
    "labd-before": LabdBefore,
    "supervisor": Supervisor,
    "circus": Circus,
}
_ = CircusClient  # re-exported for the bridge's child, which imports it from scale_clients
