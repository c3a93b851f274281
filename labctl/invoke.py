"""One command line through a click group: an exit code and at most one line on stderr.

The one-shot CLI (:func:`labctl.cli.run`) and the REPL (:mod:`labctl.repl.dispatch`)
both run their words through :func:`invoke` with the grammar's group, so neither imports
the other. Exit codes: 0 ok, 1 the daemon said no, 2 usage, 3 cannot reach labd, 130
interrupted. Never raises, never exits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import IO, Any

import click

from labctl.state import State
from labd.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, LabError, message_of


class Failure(click.ClickException):
    """A :class:`LabError` on its way out through click, keeping its exit code."""

    def __init__(self, error: LabError) -> None:
        super().__init__(error.message)
        # per instance: click >= 8.5 declares exit_code a ClassVar
        setattr(self, "exit_code", error.exit_code)  # noqa: B010

    def show(self, file: IO[Any] | None = None) -> None:
        fail(self.format_message(), self.exit_code)  # the same one line as invoke() prints


class LabGroup(click.Group):
    """A group that turns our errors into click's, so that click's own machinery (and
    ``CliRunner``) reports them with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LabError as exc:
            raise Failure(exc) from exc


def invoke(group: click.Group, words: Sequence[str], state: State | None = None) -> int:
    """Run ``words`` through ``group``; return the exit code.

    ``state`` is the REPL's session state (``None``: the group builds one from the
    global options).
    """
    for word in words:
        if not _is_text(word):
            raw = word.encode("utf-8", "surrogateescape")
            return fail(f"an argument is not UTF-8 text: {raw!r}", EXIT_USAGE)
    try:
        result = group.main(args=list(words), prog_name="labctl", standalone_mode=False, obj=state)
    except click.UsageError as exc:
        return fail(_usage_line(exc), exc.exit_code)
    except click.ClickException as exc:
        return fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt, EOFError):
        return fail("interrupted", EXIT_INTERRUPTED)
    except LabError as exc:
        return fail(exc.message, exc.exit_code)
    except (click.exceptions.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return code if isinstance(code, int) else EXIT_FAILED
    except Exception as exc:
        if os.environ.get("LABCTL_DEBUG"):
            raise
        return fail(f"internal error: {type(exc).__name__}: {message_of(exc)}", EXIT_FAILED)
    return result if isinstance(result, int) else 0


def fail(message: str, code: int = EXIT_USAGE) -> int:
    """One line on stderr, whatever the message quotes (control characters escaped)."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message.strip())
    click.echo(f"labctl: {line}", err=True)
    return code


def _usage_line(exc: click.UsageError) -> str:
    message = exc.format_message()
    if exc.ctx is None or "(see:" in message:
        return message
    return f"{message} (see: {exc.ctx.command_path} --help)"


def _is_text(word: str) -> bool:
    """False for argv bytes that are not UTF-8 (Python decodes them to lone surrogates)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
