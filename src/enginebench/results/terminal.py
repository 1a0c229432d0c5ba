"""Tables that stay readable at any width: in an 80-column terminal or a log, a table too wide for the line is
folded into several tables, each repeating the row's key columns, instead of cutting every cell to "…"."""

from __future__ import annotations

from rich.cells import cell_len
from rich.table import Table

_COLUMN_COST = 3  # a column's padding and border, beside its text


def column_groups(widths: list[int], keys: int, available: int) -> list[list[int]]:
    """Split the columns after the first `keys` into groups that fit `available` cells with the key columns."""
    base = 1 + sum(w + _COLUMN_COST for w in widths[:keys])
    groups: list[list[int]] = [[]]
    used = base
    for i in range(keys, len(widths)):
        if groups[-1] and used + widths[i] + _COLUMN_COST > available:
            groups.append([])
            used = base
        groups[-1].append(i)
        used += widths[i] + _COLUMN_COST
    return groups


def print_table(console, title: str, headers: list[str], rows: list[list[str]], *, keys: int,
                left: set[str] = frozenset(), styles: list[str | None] | None = None) -> None:
    """Print rows under headers; the first `keys` columns identify a row and are repeated in every fold.
    Columns in `left` are left-aligned (the others are figures, right-aligned)."""
    widths = [max([cell_len(h)] + [cell_len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    groups = column_groups(widths, keys, console.width)
    for n, group in enumerate(groups):
        columns = list(range(keys)) + group
        fits = 1 + sum(widths[i] + _COLUMN_COST for i in columns) <= console.width
        suffix = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=title + suffix if n == 0 else f"… continued{suffix}", show_lines=False)
        for i in columns:
            # a fold that still does not fit (very narrow terminal) wraps its cells rather than cutting them
            table.add_column(headers[i], justify="left" if headers[i] in left else "right", no_wrap=fits,
                             overflow="fold")
        for r, row in enumerate(rows):
            table.add_row(*(row[i] for i in columns), style=styles[r] if styles else None)
        console.print(table)


__all__ = ["print_table", "column_groups"]
