"""CLI tables that stay readable at any terminal width, 80 columns included.

A column is never cut (names, addresses, numbers: it keeps its full width), or folds (free
text wraps onto more lines). Where the table is still wider than the terminal, columns with
a ``give_way`` rank leave it, highest rank first, and the caller prints which ones did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

#: What rich adds around each column (padding and a rule), and once per table (the edge).
_PER_COLUMN, _EDGE = 3, 1


@dataclass(frozen=True)
class Column:
    header: str
    fold: bool = False
    """Free text: wraps onto more lines (down to ``min_fold`` characters wide)."""
    give_way: int = 0
    """0: always shown; otherwise left out at narrow widths, highest first."""
    justify: Literal["left", "right"] = "left"
    min_fold: int = 16


def _width(cell: RenderableType) -> int:
    text = Text.from_markup(cell) if isinstance(cell, str) else cell
    if not isinstance(text, Text):
        return 0
    return max((len(line) for line in text.plain.splitlines()), default=0)


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[RenderableType]],
    width: int,
    title: str | None = None,
) -> tuple[Table, list[str]]:
    """The table for a terminal ``width`` columns wide, and the headers that gave way."""
    natural = [
        max([len(c.header), *(_width(row[i]) for row in rows)]) for i, c in enumerate(columns)
    ]
    needed = [
        min(n, max(c.min_fold, len(c.header))) if c.fold else n
        for c, n in zip(columns, natural, strict=True)
    ]
    shown = list(range(len(columns)))
    for index in sorted(
        (i for i, c in enumerate(columns) if c.give_way), key=lambda i: -columns[i].give_way
    ):
        if sum(needed[i] + _PER_COLUMN for i in shown) + _EDGE <= width:
            break
        shown.remove(index)
    table = Table(title=title)
    for i in shown:
        column = columns[i]
        if column.fold:
            table.add_column(column.header, overflow="fold", justify=column.justify)
        else:
            table.add_column(
                column.header, no_wrap=True, min_width=natural[i], justify=column.justify
            )
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table, [columns[i].header for i in range(len(columns)) if i not in shown]


def print_table(
    console: Console,
    columns: Sequence[Column],
    rows: Sequence[Sequence[RenderableType]],
    title: str | None = None,
    *,
    show_lines: bool = False,
) -> None:
    """Prints the table fitted to ``console``'s width, then a line naming any column that
    gave way."""
    table, hidden = fit_table(columns, rows, console.width, title)
    table.show_lines = show_lines
    console.print(table)
    if hidden:
        console.print(
            f"(not shown at {console.width} columns: {', '.join(hidden)}; "
            "a wider terminal shows them)",
            style="dim",
        )
