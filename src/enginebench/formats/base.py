"""The contract every output format keeps: what it renders (runs, a comparison), whether it needs a file or a
folder, and `render(subject, output)`. A text format only writes `text(subject)`; the rest is shared here:
stdout or --output, the one-line errors for a missing or unwritable --output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Union

from enginebench.errors import UsageError

if TYPE_CHECKING:  # for the reader: a parser that lists formats need not load numpy
    from enginebench.analysis.compare import RunComparison
    from enginebench.store.model import Run

RUNS = "runs"  # a list of runs: one (show), or several where the format says so (report, plot)
COMPARISON = "comparison"  # a RunComparison: two runs cell by cell (compare)
Subject = Union["list[Run]", "RunComparison"]


def subject_kind(subject: Subject) -> str:
    return RUNS if isinstance(subject, (list, tuple)) else COMPARISON


class Format:
    name: ClassVar[str]
    help: ClassVar[str]  # one line for --help
    renders: ClassVar[frozenset[str]]  # RUNS and/or COMPARISON
    suffix: ClassVar[str] = ""  # what its --output file ends with: ".json"; "" for a folder
    binary: ClassVar[bool] = False  # not text: never written to a terminal, needs --output FILE
    folder: ClassVar[bool] = False  # several files: needs --output DIR
    several_runs: ClassVar[bool] = False  # renders several runs at once (else exactly one)

    @classmethod
    def needs_output(cls) -> bool:
        return cls.binary or cls.folder

    @classmethod
    def check_output(cls, output: str | None, option: str = "--output") -> None:
        """Before any work: a binary or folder format without --output, a folder where a file goes or the other
        way round, is a UsageError naming the fix."""
        if output is None and cls.binary:
            raise UsageError(f"--format {cls.name} writes a binary file: give {option} FILE{cls.suffix}")
        if output is None and cls.folder:
            raise UsageError(f"--format {cls.name} writes a folder of files: give {option} DIR")
        if output is not None and cls.folder and Path(output).exists() and not Path(output).is_dir():
            raise UsageError(f"{option} {output} is a file: --format {cls.name} writes a folder; pass a folder")
        if output is not None and not cls.folder and Path(output).is_dir():
            raise UsageError(f"{option} {output} is a folder: --format {cls.name} writes one file; pass "
                             f"FILE{cls.suffix}")

    def text(self, subject: Subject) -> str:
        """The whole output of a text format."""
        raise NotImplementedError(f"--format {self.name} is not text")

    def show(self, subject: Subject) -> None:
        """To stdout (text formats only)."""
        sys.stdout.write(self.text(subject))

    def write(self, subject: Subject, path: Path) -> list[Path]:
        """To `path` (a file, or a folder for folder formats); the files written."""
        path.write_text(self.text(subject), encoding="utf-8")
        return [path]

    def render(self, subject: Subject, output: str | None = None) -> list[Path]:
        """`subject` (a list of runs, or a RunComparison) to stdout, or to `output`: the files written."""
        kind = subject_kind(subject)
        if kind not in self.renders:
            raise UsageError(f"--format {self.name} does not render {'a comparison' if kind == COMPARISON else 'runs'}")
        if kind == RUNS and len(subject) != 1 and not self.several_runs:
            raise UsageError(f"--format {self.name} renders one run, not {len(subject)}: pass one run id")
        self.check_output(output)
        if output is None:
            self.show(subject)
            return []
        try:
            return self.write(subject, Path(output))
        except OSError as e:
            raise UsageError(f"cannot write {output}: {e.strerror or e}; choose a writable path") from None


__all__ = ["Format", "RUNS", "COMPARISON", "Subject", "subject_kind"]
