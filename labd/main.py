"""The ``labd`` entry point. Kept light on purpose: forkserver children on Python 3.11
re-import the main module, so everything heavy is imported inside :func:`main`."""

from __future__ import annotations


def main() -> None:
    from labd.cli import cli

    cli()
