"""Named labd addresses, as docker and kubectl users know them: ``labctl context ...``.

Stored in ``$XDG_CONFIG_HOME/ipclab/contexts.json`` (else ``~/.config/ipclab``), a
private file (mode 0600 in a 0700 directory): it names the TLS files that open a lab
host. A file that others can read or write, or that is not the user's, is refused:
whoever can change it chooses where labctl connects and with which key.

The name ``local`` is reserved: the default local socket (with autostart).
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labctl.target import Target, resolve_target
from labd.errors import UsageError
from labd.protocol import Address, parse_address

FILE_NAME = "contexts.json"
LOCAL = "local"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ContextError(UsageError):
    """A context that does not exist, or a context file labctl refuses (exit 2)."""

    exit_code = 2


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "ipclab"


@dataclass(frozen=True)
class Context:
    """A named labd: its address and (for TCP beyond loopback) the TLS files."""

    name: str
    connect: str
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None

    def target(self) -> Target:
        return resolve_target(
            parse_address(self.connect), (self.tls_cert, self.tls_key, self.tls_ca)
        )


class Contexts:
    """The user's contexts file: read, checked, and written back atomically."""

    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or config_dir()
        self.path = self.dir / FILE_NAME

    # --- reading -----------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {"current": None, "contexts": {}}
        except OSError as exc:
            what = f"cannot read the context file {self.path}: {exc.strerror}"
            raise ContextError(what) from None
        with os.fdopen(fd) as f:
            _check_private(os.fstat(f.fileno()), self.path)
            try:
                data = json.load(f)
            except ValueError as exc:
                what = f"the context file {self.path} is not valid JSON: {exc}"
                raise ContextError(what) from None
        if not isinstance(data, dict) or not isinstance(data.get("contexts"), dict):
            raise ContextError(f"the context file {self.path} is malformed (remove it, add again)")
        return data

    def all(self) -> list[Context]:
        data = self._load()
        return [_context(name, raw) for name, raw in sorted(data["contexts"].items())]

    def current(self) -> str | None:
        current = self._load().get("current")
        return current if isinstance(current, str) else None

    def get(self, name: str) -> Context:
        raw = self._load()["contexts"].get(name)
        if raw is None:
            known = ", ".join(c.name for c in self.all()) or "none yet"
            raise ContextError(
                f"no context {name!r} (known: {known}; add one: labctl context add NAME "
                "--connect ADDRESS)"
            )
        return _context(name, raw)

    # --- changing ------------------------------------------------------------------
    def add(self, ctx: Context) -> None:
        check_name(ctx.name)
        try:
            ctx.target()  # the address and TLS files must fit together
        except UsageError as exc:
            raise ContextError(exc.message) from None
        data = self._load()
        if ctx.name in data["contexts"]:
            raise ContextError(f"context {ctx.name!r} exists (remove it first: labctl context rm)")
        data["contexts"][ctx.name] = {k: v for k, v in asdict(ctx).items() if k != "name" and v}
        self._save(data)

    def use(self, name: str) -> None:
        data = self._load()
        if name != LOCAL:
            self.get(name)
        data["current"] = None if name == LOCAL else name
        self._save(data)

    def remove(self, name: str) -> None:
        data = self._load()
        if data["contexts"].pop(name, None) is None:
            self.get(name)  # the error naming the known ones
        if data.get("current") == name:
            data["current"] = None
        self._save(data)

    def _save(self, data: dict[str, Any]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".contexts-")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def choose_target(
    connect: Address | None,
    tls_paths: tuple[str | None, str | None, str | None],
    context: str | None,
    *,
    no_autostart: bool = False,
    current: bool = True,
    store: Contexts | None = None,
) -> Target:
    """Where this invocation connects: ``--connect`` (with ``--tls-*``), else ``--context``,
    else the context in use (``context use``; not for ``context`` commands), else the
    default local socket."""
    if context is not None:
        if connect is not None or any(tls_paths):
            raise ContextError("--context and --connect/--tls-* exclude each other")
        if context == LOCAL:
            return resolve_target(None, no_autostart=no_autostart)
        return (store or Contexts()).get(context).target()
    if connect is None and not any(tls_paths) and current:
        chosen = (store or Contexts()).current()
        if chosen is not None:
            return (store or Contexts()).get(chosen).target()
    return resolve_target(connect, tls_paths, no_autostart=no_autostart)


def check_name(name: str) -> None:
    if name == LOCAL:
        raise ContextError(f"{LOCAL!r} is reserved: it names the default local socket")
    if not _NAME.match(name):
        raise ContextError(
            f"context name {name!r}: use letters, digits, _ . - (at most 63, no comma)"
        )


def absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _context(name: str, raw: object) -> Context:
    if not isinstance(raw, dict) or not isinstance(raw.get("connect"), str):
        raise ContextError(f"context {name!r} is malformed in the context file (rm it, add again)")
    keys = ("tls_cert", "tls_key", "tls_ca")
    return Context(name, raw["connect"], *(raw.get(k) for k in keys))


def _check_private(st: os.stat_result, path: Path) -> None:
    if st.st_uid != os.getuid():
        raise ContextError(f"the context file {path} is not yours: refusing it (remove it)")
    if stat.S_IMODE(st.st_mode) & 0o077:
        mode = oct(stat.S_IMODE(st.st_mode))[2:]
        raise ContextError(
            f"the context file {path} is open to others (mode {mode}): refusing it "
            f"(chmod 600 {path})"
        )
