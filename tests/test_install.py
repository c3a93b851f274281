"""First contact on a stock system: the README's first command, ``python3 install.py``,
from a clean checkout with the distribution's own python3 (PEP 668: it refuses ``pip
install``), then ``labctl --version``; and ``make test``'s choice of interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DISTRO_PYTHON = Path("/usr/bin/python3")


def managed(python: Path) -> bool:
    """Whether ``python`` is marked EXTERNALLY-MANAGED (PEP 668)."""
    if not python.exists():
        return False
    stdlib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


needs_pep668 = pytest.mark.skipif(
    not managed(DISTRO_PYTHON), reason="no PEP 668-marked /usr/bin/python3 here"
)


def clean_checkout(into: Path) -> Path:
    """The repository's files as git knows them (no venv, caches or build output)."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others",
         "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    return into


def user_env(home: Path) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k in ("LANG",)}
    return {**keep, "PATH": "/usr/bin:/bin", "HOME": str(home)}


@needs_pep668
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_first_command_installs_with_the_distribution_s_python(tmp_path: Path) -> None:
    src = clean_checkout(tmp_path / "ipclab")
    home = tmp_path / "home"
    env = user_env(home)
    refused = subprocess.run(
        [str(DISTRO_PYTHON), "-m", "pip", "install", "--dry-run", "."],
        cwd=src, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr
    done = subprocess.run(
        [str(DISTRO_PYTHON), "install.py", "--no-run"],
        cwd=src, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "linked in" in done.stderr and "export PATH=" in done.stderr
    # a long home (pytest's): our sentences fit 80 columns, each path on a line of its own
    ours = [line for line in done.stderr.splitlines() if line.startswith("install.py: ")]
    assert len(str(home)) > 40 and ours, done.stderr
    assert not [line for line in ours if len(line) > 80], ours
    assert f"    {home}/.local/bin" in done.stderr.splitlines(), done.stderr
    labctl = home / ".local" / "bin" / "labctl"
    version = subprocess.run(
        ["labctl", "--version"], env={**env, "PATH": f"{labctl.parent}:/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("labctl ")
    assert (home / ".local" / "share" / "ipclab" / "venv" / "bin" / "labd").exists()


@needs_pep668
def test_make_test_uses_a_venv_where_pip_would_refuse(tmp_path: Path) -> None:
    chosen = subprocess.run(
        [str(DISTRO_PYTHON), str(REPO / "install.py"), "--test-python"],
        capture_output=True, text=True, check=True, env=user_env(tmp_path),
    ).stdout.strip()  # fmt: skip
    assert chosen == str(REPO / ".venv" / "bin" / "python")


def test_inside_a_venv_make_test_uses_it() -> None:
    import sys

    if (
        sys.prefix == sys.base_prefix
        and (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists()
    ):
        pytest.skip("this interpreter is the distribution's own")
    chosen = subprocess.run(
        [sys.executable, str(REPO / "install.py"), "--test-python"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert chosen == sys.executable
