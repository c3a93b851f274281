"""The layout's boundaries (docs/architecture.md), checked: what runs in workers stays
stdlib-only, only labd/server/ speaks rpyc, labctl reaches into labd only for the
protocol and the errors. Each checker also runs on a small tree that crosses its
boundary, so a checker that could not fail would fail here."""

from __future__ import annotations

import ast
import json
import pkgutil
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import labd.worker

REPO = Path(__file__).resolve().parent.parent
#: what a worker process must never import (labd.worker's docstring, PITFALLS)
WORKER_FORBIDDEN = ("rpyc", "psutil", "sqlite3", "_sqlite3", "click", "cryptography")
#: what labctl may import from labd: the dependency-free protocol and errors (and the
#: package itself, for __version__)
LABCTL_ALLOWED = {"labd", "labd.protocol", "labd.errors"}
#: what a mechanism module may import from labd: it is preloaded into every worker too
MECHANISM_ALLOWED = ("labd.mechanisms", "labd.params", "labd.protocol", "labd.errors")
MECHANISM_ALLOWED_WORKER = "labd.worker"


def worker_modules() -> list[str]:
    names = [f"labd.worker.{m.name}" for m in pkgutil.iter_modules(labd.worker.__path__)]
    return ["labd.worker", *sorted(names)]


def imports(path: Path) -> Iterator[tuple[str, int, str]]:
    """(module imported, line, imported name or '') of every import in a file, wherever
    it stands (a lazy import inside a function counts too)."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, ""
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                yield node.module, node.lineno, alias.name


def top(module: str) -> str:
    return module.partition(".")[0]


def loaded_after_import(modules: list[str]) -> list[str]:
    """The modules a fresh interpreter holds after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


# --- the checkers ---------------------------------------------------------------------------
def forbidden_in(loaded: list[str]) -> list[str]:
    return sorted(m for m in loaded if top(m) in WORKER_FORBIDDEN)


def rpyc_outside_server(package: Path) -> list[str]:
    """``file:line`` of every import of rpyc in ``package`` outside its server/ folder."""
    out = []
    for path in sorted(package.rglob("*.py")):
        if "server" in path.relative_to(package).parts[:1]:
            continue
        out += [f"{path}:{line}" for mod, line, _ in imports(path) if top(mod) == "rpyc"]
    return out


def labctl_reaches_into_labd(package: Path) -> list[str]:
    """Imports of labctl from labd beyond the protocol, the errors and ``__version__``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        for mod, line, name in imports(path):
            if top(mod) != "labd":
                continue
            full = f"{mod}.{name}" if mod == "labd" and name != "__version__" else mod
            if full not in LABCTL_ALLOWED:
                out.append(f"{path}:{line}: {full}")
    return out


def worker_imports_beyond_itself(folder: Path) -> list[str]:
    """Imports of labd modules from labd/worker/ other than labd.worker's own."""
    out = []
    for path in sorted(folder.rglob("*.py")):
        for mod, line, name in imports(path):
            full = f"{mod}.{name}" if mod == "labd" else mod
            if top(mod) == "labd" and not full.startswith("labd.worker"):
                out.append(f"{path}:{line}: {full}")
    return out


def mechanism_imports_beyond_contract(folder: Path) -> list[str]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        for mod, line, _ in imports(path):
            if top(mod) != "labd":
                continue
            if not (mod.startswith(MECHANISM_ALLOWED) or mod.startswith(MECHANISM_ALLOWED_WORKER)):
                out.append(f"{path}:{line}: {mod}")
    return out


# --- the real tree ----------------------------------------------------------------------
def test_importing_labd_worker_pulls_in_no_heavy_module() -> None:
    loaded = loaded_after_import(worker_modules())
    assert forbidden_in(loaded) == []
    assert {m for m in loaded if top(m) == "labd"} == {"labd", *worker_modules()}


def test_what_the_forkserver_preloads_is_light_and_exists() -> None:
    from labd.lab import FREEZE, PRELOAD

    preloaded = {*PRELOAD, FREEZE}  # FREEZE last, after the mechanisms: it freezes them all
    assert preloaded == set(worker_modules()[1:]), "PRELOAD must name labd.worker's modules"
    builtins = [f"labd.mechanisms.{m}" for m in ("shared", "manager", "queue", "pipe")]
    assert forbidden_in(loaded_after_import([*PRELOAD, *builtins])) == []


def test_the_forkserver_does_not_preload_redis() -> None:
    """Each fork costs with the size of what is forked: redis-py would make every set's
    dearer; a Redis set's launcher imports it once."""
    from labd.registry import Registry

    registry = Registry()
    registry.load_all()
    modules = registry.modules()
    assert "labd.mechanisms.shared" in modules
    assert [m for m in loaded_after_import(modules) if top(m) == "redis"] == []


def test_only_labd_server_imports_rpyc() -> None:
    assert rpyc_outside_server(REPO / "labd") == []
    assert [m for m, _, _ in imports(REPO / "labd/server/service.py") if top(m) == "rpyc"]


def test_labctl_imports_only_the_protocol_and_errors_of_labd() -> None:
    assert labctl_reaches_into_labd(REPO / "labctl") == []


def test_labd_worker_imports_only_itself_and_mechanisms_only_the_contract() -> None:
    assert worker_imports_beyond_itself(REPO / "labd/worker") == []
    assert mechanism_imports_beyond_contract(REPO / "labd/mechanisms") == []


def conftest_importers(folder: Path) -> list[str]:
    """Test modules importing conftest (fixtures live there; helpers live in kits)."""
    return [
        f"{path}:{line}"
        for path in sorted(folder.glob("*.py"))
        for mod, line, _ in imports(path)
        if mod == "conftest"
    ]


def test_no_test_imports_conftest() -> None:
    assert conftest_importers(REPO / "tests") == []


def undocumented(package: Path, doc: Path) -> list[str]:
    """Modules and folders of ``package`` that ``doc``'s layout tree does not name."""
    words = set(re.findall(r"\w+", doc.read_text()))
    names = {p.stem for p in package.rglob("*.py") if not p.stem.startswith("__")}
    names |= {p.name for p in package.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    return sorted(names - words)


def test_the_layout_tree_names_every_module() -> None:
    doc = REPO / "docs/architecture.md"
    assert undocumented(REPO / "labd", doc) == [], "add them to docs/architecture.md"
    assert undocumented(REPO / "labctl", doc) == [], "add them to docs/architecture.md"


# --- each checker fails when its boundary is crossed ---------------------------------------
@pytest.fixture
def crossed(tmp_path: Path) -> Path:
    """A small tree that crosses every boundary once."""
    files = {
        "labd/lab.py": "import rpyc\n",
        "labd/server/service.py": "import rpyc\n",
        "labd/worker/pacing.py": "def f():\n    from labd.store import Store\n",
        "labd/mechanisms/odd.py": "from labd.lab import Lab\n",
        "labctl/cli.py": "from labd import __version__\nfrom labd.lab import Lab\n",
        "labctl/render.py": "from labd import params\n",
        "tests/test_x.py": "from conftest import DaemonFactory\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checkers_fail_on_a_crossed_tree(crossed: Path) -> None:
    assert rpyc_outside_server(crossed / "labd") == [f"{crossed}/labd/lab.py:1"]
    assert labctl_reaches_into_labd(crossed / "labctl") == [
        f"{crossed}/labctl/cli.py:2: labd.lab",
        f"{crossed}/labctl/render.py:1: labd.params",
    ]
    assert worker_imports_beyond_itself(crossed / "labd/worker") == [
        f"{crossed}/labd/worker/pacing.py:2: labd.store"
    ]
    assert mechanism_imports_beyond_contract(crossed / "labd/mechanisms") == [
        f"{crossed}/labd/mechanisms/odd.py:1: labd.lab"
    ]
    assert forbidden_in(["os", "psutil._common", "labd.worker"]) == ["psutil._common"]
    assert conftest_importers(crossed / "tests") == [f"{crossed}/tests/test_x.py:1"]
    (crossed / "layout.md").write_text("lab.py server/service.py worker/pacing.py mechanisms/")
    assert undocumented(crossed / "labd", crossed / "layout.md") == ["odd"]
