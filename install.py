#!/usr/bin/env python3
"""Install ipclab where it works, whatever python3 this is, and open labctl.

    python3 install.py            install, link labctl and labd into ~/.local/bin, run labctl
    python3 install.py --no-run   the same without running labctl
    python3 install.py --test     (make test) the test dependencies; prints the python to use

Inside a virtual environment, ipclab goes into it. Otherwise it goes into a virtual
environment of its own, ``$XDG_DATA_HOME/ipclab/venv`` (``~/.local/share/ipclab/venv``),
so that a distribution's own python3, which refuses ``pip install`` (PEP 668,
"externally-managed-environment", Debian 12, Ubuntu 23.04 and later), works too; labctl
and labd are then linked into ``$XDG_BIN_HOME`` (``~/.local/bin``). Without Debian's
python3-venv (no ensurepip) the environment is made without pip and filled by the
system's pip (``pip --python``, pip 22.3 or later). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("labctl", "labd")


def say(line: str, *paths: object) -> None:
    """A line of ours on stderr; each of ``paths`` on a line of its own, indented, so a
    long home directory does not wrap the sentence in an 80-column terminal."""
    text = "".join(f"\n    {p}" for p in paths)
    print(f"install.py: {line}{text}", file=sys.stderr, flush=True)


def in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def externally_managed() -> bool:
    """PEP 668: the distribution marks its interpreter as managed by its package manager."""
    return (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").exists()


def data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def bin_home() -> Path:
    return Path(os.environ.get("XDG_BIN_HOME") or Path.home() / ".local" / "bin")


def make_venv(where: Path) -> list[str]:
    """A virtual environment at ``where`` (reused if there); the pip command that fills it."""
    python = where / "bin" / "python"
    if python.exists():
        return [str(python), "-m", "pip"] if _has_pip(python) else _system_pip(python)
    say("making a virtual environment in", where)
    try:
        venv.create(where, with_pip=True)
        return [str(python), "-m", "pip"]
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"no pip in the new environment ({exc}); using the system's pip")
    venv.create(where, with_pip=False, clear=True)
    return _system_pip(python)


def _has_pip(python: Path) -> bool:
    done = subprocess.run([str(python), "-c", "import pip"], capture_output=True)
    return done.returncode == 0


def _system_pip(python: Path) -> list[str]:
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        sys.exit(
            "install.py: neither ensurepip nor pip is available: install one "
            "(sudo apt-get install python3-venv), then run this again"
        )
    return [sys.executable, "-m", "pip", "--python", str(python)]


def pip_install(pip: list[str], *what: str) -> None:
    command = [*pip, "install", "--quiet", "--disable-pip-version-check", *what]
    if subprocess.run(command, cwd=HERE).returncode:
        sys.exit(f"install.py: pip failed: {' '.join(command)}")


def link(bin_dir: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    for name in SCRIPTS:
        target = into / name
        if target.is_symlink() or not target.exists():
            target.unlink(missing_ok=True)
            target.symlink_to(bin_dir / name)
        else:
            say("exists and is not ours, left as it is:", target)


def install_app() -> Path:
    """ipclab for using it; returns the directory holding labctl."""
    if in_venv():
        pip_install([sys.executable, "-m", "pip"], ".")
        where = Path(sys.executable).parent
        say("installed ipclab into this virtual environment:", sys.prefix)
        return where
    home = data_home() / "ipclab" / "venv"
    pip_install(make_venv(home), ".")
    link(home / "bin", bin_home())
    say("installed ipclab into", home)
    say("labctl and labd are linked in", bin_home())
    if not _on_path(bin_home()):
        say("which is not on your PATH yet: add it with", f"export PATH={bin_home()}:$PATH")
    return bin_home()


def _on_path(directory: Path) -> bool:
    return str(directory) in os.environ.get("PATH", "").split(os.pathsep)


def test_python() -> Path:
    """The interpreter the tests run with: this one, or the repository's .venv (PEP 668)."""
    if in_venv() or not externally_managed():
        return Path(sys.executable)
    return HERE / ".venv" / "bin" / "python"


def install_tests() -> None:
    python = test_python()
    pip = (
        [str(python), "-m", "pip"]
        if python == Path(sys.executable)
        else make_venv(python.parents[1])
    )
    pip_install(pip, "-e", ".[test,plot,redis]", "-e", "examples/ipclab-shm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-run", action="store_true", help="do not run labctl afterwards")
    ap.add_argument("--test", action="store_true", help="install the test dependencies")
    ap.add_argument("--test-python", action="store_true", help="print the tests' python")
    args = ap.parse_args()
    if args.test_python:
        print(test_python())
        return
    if args.test:
        install_tests()
        return
    where = install_app()
    if not args.no_run:
        labctl = str(where / "labctl")
        os.execv(labctl, [labctl])


if __name__ == "__main__":
    main()
