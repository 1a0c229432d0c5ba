"""Tables that stay readable wherever they are read.

In a terminal, a table too wide for the line is folded into several tables, each repeating the row's key
columns, instead of cutting every cell to "…". Anywhere else (a pipe, a log file, CI output) the table is
printed as Markdown: one line per row, every cell whole, text a person can grep or paste into an issue.
FORCE_COLOR=1 (rich's switch) asks for the terminal layout in a pipe."""

from __future__ import annotations

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table

_COLUMN_COST = 3  # a column's padding and border, beside its text
TEXT_WIDTH = 24  # a left-aligned text column wider than this wraps at spaces instead of taking a fold of its own


def is_screen(console) -> bool:
    """A terminal or a notebook: rich lays tables out there; elsewhere we print Markdown."""
    return console.is_terminal or console.is_jupyter


def column_groups(widths: list[int], keys: int, available: int, repeat: int | None = None) -> list[list[int]]:
    """Split the columns after the first `keys` into groups that fit `available` cells: the first group beside
    all the key columns, each later one beside the first `repeat` of them (all of them by default)."""
    repeat = keys if repeat is None else repeat
    used = 1 + sum(w + _COLUMN_COST for w in widths[:keys])
    groups: list[list[int]] = [[]]
    if repeat < keys < len(widths) and used + widths[keys] + _COLUMN_COST > available:
        groups.append([])  # the key columns fill the line: the first fold is them alone
        used = 1 + sum(w + _COLUMN_COST for w in widths[:repeat])
    for i in range(keys, len(widths)):
        if groups[-1] and used + widths[i] + _COLUMN_COST > available:
            groups.append([])
            used = 1 + sum(w + _COLUMN_COST for w in widths[:repeat])
        groups[-1].append(i)
        used += widths[i] + _COLUMN_COST
    return groups


def header_lines(header: str, width: int) -> str:
    """A header wider than its column's cells, broken at spaces (and after ×) onto lines no wider than the
    cells or its longest word: `peak RSS (MB)` over `391` becomes `peak\nRSS\n(MB)`."""
    words = header.replace("×", "× ").split()
    if cell_len(header) <= width or len(words) == 1:
        return header
    width = max(width, *map(cell_len, words))
    lines = [words[0]]
    for word in words[1:]:
        joined = lines[-1] + ("" if lines[-1].endswith("×") else " ") + word
        if cell_len(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured pipe table; `|` in a cell is escaped and a line break becomes a space."""
    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def print_table(console, title: str, headers: list[str], rows: list[list[str]], *, keys: int,
                left: set[str] = frozenset(), styles: list[str | None] | None = None, repeat: int | None = None) -> None:
    """Print rows under headers. The first `keys` columns identify a row: the first fold shows them all, each
    later fold repeats the first `repeat` of them (all by default). Columns in `left` are left-aligned (the
    others are figures, right-aligned). Cells are plain text, never markup. Off a screen, the title and a
    Markdown table."""
    if not is_screen(console):
        console.out(f"{title}\n\n{markdown_table(headers, rows)}", highlight=False)
        return
    cells = [max([0] + [cell_len(row[i]) for row in rows]) for i in range(len(headers))]
    wrapped = set()  # long text columns (lists, reasons) wrap at spaces within TEXT_WIDTH
    for i, h in enumerate(headers):
        if i >= keys and h in left and cells[i] > TEXT_WIDTH:
            wrapped.add(i)
            cells[i] = max([TEXT_WIDTH] + [cell_len(w) for row in rows for w in row[i].split()])
    shown = [header_lines(h, w) for h, w in zip(headers, cells)]
    widths = [max(w, *map(cell_len, h.split("\n"))) for h, w in zip(shown, cells)]
    groups = column_groups(widths, keys, console.width, repeat)
    for n, group in enumerate(groups):
        columns = list(range(keys if n == 0 else (keys if repeat is None else repeat))) + group
        fits = 1 + sum(widths[i] + _COLUMN_COST for i in columns) <= console.width
        suffix = f" ({n + 1}/{len(groups)})" if len(groups) > 1 else ""
        table = Table(title=escape(title + suffix if n == 0 else f"… continued{suffix}"), show_lines=False)
        for k, i in enumerate(columns):
            # a fold that still does not fit (a long text cell, a very narrow terminal) wraps its cells at spaces
            # rather than cutting them, the key columns last
            keep = fits or (k < keys and 1 + sum(widths[j] + _COLUMN_COST for j in columns[:keys]) < console.width // 2)
            table.add_column(escape(shown[i]), justify="left" if headers[i] in left else "right",
                             no_wrap=keep and i not in wrapped, overflow="fold",
                             width=widths[i] if i in wrapped and fits else None)
        for r, row in enumerate(rows):
            table.add_row(*(escape(row[i]) for i in columns), style=styles[r] if styles else None)
        console.print(table)


def print_lines(console, lines: list[str], style: str = "dim") -> None:
    """Lines under a table (notes, the machine): styled on a screen, plain and unwrapped elsewhere."""
    for line in lines:
        if is_screen(console):
            console.print(f"[{style}]{escape(line)}[/{style}]", highlight=False)
        else:
            console.out(line, highlight=False)


__all__ = ["print_table", "print_lines", "markdown_table", "column_groups",
           "is_screen"]
