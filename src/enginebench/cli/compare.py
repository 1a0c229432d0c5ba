"""`enginebench compare RUN_A RUN_B`: two stored runs cell by cell, with significance; a CI regression gate."""

from __future__ import annotations

import math
import os
import re

from enginebench.analysis.compare import CORRECTIONS, GATE_KINDS, compare_runs
from enginebench.cli.args import DEFAULT_DB
from enginebench.errors import UsageError
from enginebench.formats import COMPARISON, Choices, get_format
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    compare = sub.add_parser(
        "compare", help="compare two stored runs cell by cell: ratio with its 95%% CI, faster/slower verdict",
        description="Compare RUN_B (new) with RUN_A (base): each cell measured in both, the ratio of its figure "
                    "with a 95% CI from the raw samples, and a verdict. A cell is SLOWER only when the whole CI "
                    "of its slowdown lies beyond --threshold, the cells judged together under Holm's correction. "
                    "--fail-on regression also fails on a cell the base measured that the new run lacks, failed, "
                    "skipped, lost fidelity on or cannot put a CI on, unless --allow names its kind.")
    compare.add_argument("base", metavar="RUN_A", help="the baseline run id (see `enginebench runs`)")
    compare.add_argument("new", metavar="RUN_B", help="the run judged against it")
    compare.add_argument("--threshold", default="5%",
                         help="the noise floor: the smallest change that counts, as a percentage; a cell is faster "
                              "or slower only when its whole CI lies beyond it [5%%]")
    compare.add_argument("--fail-on", choices=["regression"],
                         help="exit 1 when a cell is slower beyond --threshold, or is missing, failed, skipped, "
                              "lost fidelity or has no CI in the new run (a CI gate)")
    compare.add_argument("--allow", metavar="KINDS", default="",
                         help=f"let the gate pass these kinds of cell, comma list: {','.join(GATE_KINDS)} [none]")
    compare.add_argument("--correction", default="holm", choices=CORRECTIONS,
                         help="for judging many cells at once: holm keeps the chance that any unchanged cell is "
                              "called changed at 5%%; none judges each cell at 95%% [holm]")
    compare.add_argument("--format", default="table", choices=Choices(COMPARISON), metavar="FORMAT",
                         help="%(choices)s (table: rich in a terminal, Markdown in a pipe) [table]")
    compare.add_argument("--output", metavar="FILE", help="write to this file instead of stdout")
    compare.add_argument("--seed", default="0", help="seeds the bootstrap of one-process cells [0]")
    compare.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database holding both runs [{DEFAULT_DB}]")


_PERCENT = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*%\s*")


def threshold(text: str) -> float:
    """`5%` -> 0.05; anything but a percentage of 0% or more is a UsageError."""
    match = _PERCENT.fullmatch(str(text))
    value = float(match[1]) / 100 if match else math.nan
    if not math.isfinite(value):
        raise UsageError(f"--threshold {text!r} is not a percentage: give e.g. --threshold 5% (or 0% for any "
                         "significant change)")
    if value < 0:
        raise UsageError(f"--threshold {text!r} must be 0% or more: give e.g. --threshold 5%")
    return value


def allowed_kinds(text: str) -> frozenset[str]:
    """`missing,failed` -> the kinds; an unknown one is a UsageError naming those there are."""
    kinds = {k.strip() for k in str(text).split(",") if k.strip()}
    unknown = sorted(kinds - set(GATE_KINDS))
    if unknown:
        raise UsageError(f"--allow {', '.join(unknown)}: not a kind of cell the gate fails on; give a comma list "
                         f"of {', '.join(GATE_KINDS)}")
    return frozenset(kinds)


def cmd_compare(args) -> int:
    fmt = get_format(args.format)
    fmt.check_output(args.output)
    limit = threshold(args.threshold)
    allow = allowed_kinds(args.allow)
    if not str(args.seed).isdigit():
        raise UsageError(f"--seed {args.seed!r} is not a whole number >= 0: give e.g. --seed 0")
    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        base, new = store.load_run(args.base), store.load_run(args.new)
    comparison = compare_runs(base, new, threshold=limit, seed=int(args.seed), correction=args.correction,
                              allow=allow)
    fmt.render(comparison, args.output)
    return 1 if args.fail_on == "regression" and comparison.fails_gate() else 0


COMMANDS = {"compare": cmd_compare}
