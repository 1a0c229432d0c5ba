"""The progress bar over cells that `run` and `sweep` show on stderr (gone when done, never in stdout)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


@dataclass
class CellProgress:
    """`with bar.progress:` around the measuring; pass `on_start`, `on_result` (and `on_total`) as callbacks."""

    progress: Progress
    task: TaskID

    def on_total(self, n: int) -> None:
        self.progress.update(self.task, total=n)
        self.progress.refresh()

    def on_start(self, cell) -> None:
        self.progress.update(self.task, description=cell.label())
        self.progress.refresh()

    def on_result(self, index, result) -> None:
        self.progress.advance(self.task)
        self.progress.refresh()


def cell_progress(console, eta: bool = False) -> CellProgress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    progress = Progress(*columns, console=console, auto_refresh=False, transient=True)
    return CellProgress(progress, progress.add_task("starting", total=None))
