"""Plain-text tables and key/value blocks with aligned columns.

Cells are padded first and styled after, so colour (``click.style``, which ``click.echo``
drops when the output is not a terminal) never disturbs the alignment.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

Styler = Callable[[int, str, str], str]  # (column, raw cell, padded cell) -> shown cell
GAP = "  "


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    style: Styler | None = None,
    indent: str = "",
) -> list[str]:
    """Lines of a table: a header row, then one line per row; ``right`` aligns columns."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str], styled: bool) -> str:
        shown = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            shown.append(style(i, cell, padded) if styled and style else padded)
        return (indent + GAP.join(shown)).rstrip()

    return [line(headers, False)] + [line(row, True) for row in rows]


def pairs(items: Sequence[tuple[str, str]], *, indent: str = "  ") -> list[str]:
    """Lines of ``key  value`` with the values aligned."""
    width = max((len(k) for k, _ in items), default=0)
    return [f"{indent}{key.ljust(width)}{GAP}{value}".rstrip() for key, value in items]
