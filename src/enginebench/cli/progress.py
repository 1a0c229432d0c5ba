"""What `run` and `sweep` show on stderr while they measure (never in stdout): a line per finished cell, with
its figure and the time left, and on a terminal a progress bar under those lines (gone when done). In a pipe
or a log the lines alone are written, one per delivered result, so a long run shows its figures as they come."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from enginebench.analysis.compare import metric_of
from enginebench.display import significant
from enginebench.engines import engine_class
from enginebench.scenarios.registry import settings_label

LONG_LOAD_S = 5.0  # a load at least this long gets its own line


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def result_label(r) -> str:
    workers = f" x{r.workers}" if r.workers > 1 else ""
    own = settings_label(r.scenario, r.settings)
    return f"{r.engine} {r.precision} {r.scenario}{workers}{' ' + own if own else ''} {r.workload} b{r.batch_size}"


def _with_ci(value: float, ci, unit: str) -> str:
    text = f"{significant(value)} {unit}"
    return text + (f" (95% CI {significant(ci[0])}-{significant(ci[1])})" if ci else "")


def headline(r) -> str:
    """The figure a result is judged on, with its interval, in a few words."""
    if r.status != "ok":
        return f"{r.status}: {(r.error or '').splitlines()[0] if r.error else ''}"
    if r.serving:
        s = r.serving
        p99 = (s.get("latency_ms") or {}).get("p99") or {}
        verdict = "VALID" if s.get("valid") else "INVALID"
        return (f"{verdict}, p99 {significant(p99['value'])} ms at {significant(s.get('achieved_qps') or 0)} q/s"
                if p99.get("value") is not None else verdict)
    metric = metric_of(r)
    figure = getattr(r, metric.figure) or {}
    value = figure.get("items_per_s", figure.get("median"))
    if value is None:
        return "ok"
    text = f"{metric.name} {_with_ci(value, figure.get('ci95'), metric.unit)}"
    processes = len(r.repetitions)
    return text + (f", {processes} processes" if processes > 1 else "")


@dataclass
class CellProgress:
    """`with bar.progress:` around the measuring; pass `on_start`, `on_result` (and `on_total`) as callbacks."""

    progress: Progress
    task: TaskID
    total: int | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    expected_s: float | None = None  # what the run said it expects to take, if it said

    def on_total(self, n: int) -> None:
        self.total = n
        self.progress.update(self.task, total=n)
        self.progress.refresh()

    def on_start(self, cell) -> None:
        self.progress.update(self.task, description=cell.label())
        self.progress.refresh()

    def on_load(self, cell, seconds: float | None) -> None:
        """A load that prepares the model says what it does; one that took long says how long, once done."""
        prepares = engine_class(cell.engine).prepares
        if seconds is None:
            self.progress.update(self.task, description=f"{cell.label()}: loading" + (
                f" ({prepares}, cached after the first time)" if prepares else ""))
        elif seconds >= LONG_LOAD_S:
            what = f" ({prepares}; cached after the first time)" if prepares else ""
            self.progress.console.print(f"  {cell.engine} {cell.precision} loaded in {seconds:.0f} s{what}",
                                        markup=False, highlight=False, soft_wrap=True)
        self.progress.refresh()

    def on_result(self, index, result) -> None:
        self.done += 1
        self.progress.advance(self.task)
        self.progress.console.print(self.line(result), markup=False, highlight=False, soft_wrap=True)
        self.progress.refresh()

    def line(self, result) -> str:
        elapsed = time.monotonic() - self.started
        where = f"[{self.done}/{self.total}" if self.total else f"[{self.done}"
        when = _clock(elapsed)
        if self.total and self.done < self.total:
            when += f", ~{_clock(self.left_s(elapsed))} left"
        return f"{where} {when}] {result_label(result)}: {headline(result)}"

    def left_s(self, elapsed: float) -> float:
        """The time left: what the plan expected less the time spent, while the run is within it (cells are not
        alike: a load that converts, a slow engine last; the plan knows their loads, an average of the cells
        done does not), then, once the run has outlasted the plan, the pace of the cells done so far."""
        if self.expected_s is not None and elapsed < self.expected_s:
            return self.expected_s - elapsed
        return elapsed / self.done * (self.total - self.done)


def cell_progress(console, eta: bool = False, expected_s: float | None = None) -> CellProgress:
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    progress = Progress(*columns, console=console, auto_refresh=False, transient=True)
    return CellProgress(progress, progress.add_task("starting", total=None), expected_s=expected_s)
