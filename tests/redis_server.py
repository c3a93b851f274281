"""A private ``redis-server`` for tests: Debian's binary (``make debian-tools``) on a unix
socket in a fresh directory (and optionally a TCP address), no persistence, stopped and
waited for at the end."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from helpers import short_dir, wait_for


class RedisServer:
    """One ``redis-server`` process; :attr:`url` is its unix socket as ``url=`` takes it."""

    def __init__(
        self,
        config: Sequence[str] = (),
        *,
        bind: str | None = None,
        port: int = 0,
        prefix: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: run `make debian-tools` (Debian redis-server)"
        self.dir = short_dir()
        self.socket = str(self.dir / "redis.sock")
        cmd = [*prefix, binary, "--port", str(port), "--unixsocket", self.socket]
        cmd += ["--unixsocketperm", "700", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(self.dir), *(["--bind", bind] if bind else []), *config]
        self.log = Path(self.dir) / "redis.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.url = f"unix://{self.socket}"
        wait_for(self._answers, 20, f"redis-server on {self.socket}")

    def client(self, password: str | None = None) -> Any:
        import redis

        return redis.Redis(unix_socket_path=self.socket, password=password)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, f"redis-server exited:\n{self.log.read_text()}"
        import redis

        try:
            with self.client() as r:
                return bool(r.ping())
        except (redis.AuthenticationError, redis.ResponseError):  # --requirepass: it answers
            return True
        except redis.ConnectionError:
            return False

    def keys(self) -> list[bytes]:
        with self.client() as r:
            return list(r.keys("*"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
