"""One table of a run as every format draws it: a title, headers and rows, which columns name a row, and the lines
under it. Each table module (one per kind of result, scenarios/base.py TABLES) builds its Section from a run;
console, md and html lay the same Sections out, so a table shows the same rows in every format."""

from __future__ import annotations

from dataclasses import dataclass, field

from enginebench.formats.terminal import markdown_table, print_lines, print_table

STYLES = {"failed": "red", "unfaithful": "red", "skipped": "dim"}  # a row's status -> its style on a screen


@dataclass(frozen=True)
class Section:
    title: str  # what the rows are, without the run id: `model minilm — batch 32 · ...`
    headers: list[str]
    rows: list[list[str]]
    keys: int  # the leading columns that name a row: every fold of a wide table shows them
    left: frozenset[str] = frozenset()  # text columns (left-aligned); the others are figures
    statuses: list[str] = field(default_factory=list)  # per row: ok, failed, skipped, unfaithful (styles, CSS)
    notes: list[str] = field(default_factory=list)  # warnings and failures, row by row
    legend: list[str] = field(default_factory=list)  # how to read the table (the machine's ceilings, units)
    repeat: int | None = 2  # how many key columns later folds repeat (None: all of them)

    def __post_init__(self):
        if not self.statuses:  # rows that are all measured alike (a breakdown's blocks)
            object.__setattr__(self, "statuses", ["ok"] * len(self.rows))
        assert len(self.statuses) == len(self.rows), "one status per row"

    def print(self, console, run_id: str | None = None) -> None:
        """On a console: folded to its width on a screen, Markdown elsewhere; the run named first when given."""
        title = f"run {run_id} — {self.title}" if run_id else self.title
        print_table(console, title, self.headers, self.rows, keys=self.keys,
                    left=self.left, styles=[STYLES.get(s) for s in self.statuses], repeat=self.repeat)
        print_lines(console, self.notes, style="yellow")
        print_lines(console, self.legend)

    def markdown(self, run_id: str) -> str:
        """The run and the title in bold, the table, then its notes and legend as a list."""
        lines = "".join(f"- {line}\n" for line in self.notes + self.legend)
        return (f"**run {run_id}** · {self.title}\n\n{markdown_table(self.headers, self.rows)}"
                + (f"\n{lines}" if lines else ""))


__all__ = ["Section", "STYLES"]
