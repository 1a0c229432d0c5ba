"""The commands that draw stored runs: `enginebench report --html FILE` and `enginebench plot --output DIR`."""

from __future__ import annotations

import os
import sys

from enginebench.cli.args import DEFAULT_DB
from enginebench.errors import UsageError


def add_parsers(sub) -> None:
    report = sub.add_parser("report", help="write one self-contained HTML file: charts, tables, warnings, machine")
    report.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids [the newest]")
    report.add_argument("--html", required=True, metavar="FILE", help="the HTML file to write")
    report.add_argument("--db", default=DEFAULT_DB)

    plot = sub.add_parser("plot", help="write the report's charts as PNG files, one per chart")
    plot.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids [the newest]")
    plot.add_argument("--output", required=True, metavar="DIR", help="the folder to write into (created if missing)")
    plot.add_argument("--db", default=DEFAULT_DB)


def _load_runs(args):
    from enginebench.results.store import ResultStore

    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        return [store.load_run(run_id) for run_id in (list(dict.fromkeys(args.run_ids)) or [None])]


def cmd_report(args) -> int:
    from enginebench.results.html_report import write_html_report

    runs = _load_runs(args)
    write_html_report(runs, args.html)
    print(f"wrote {args.html} ({', '.join('run ' + run.run_id for run in runs)})")
    return 0


def cmd_plot(args) -> int:
    from enginebench.results.plots import build_charts, write_pngs

    runs = _load_runs(args)
    charts = build_charts(runs)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"--output {args.output} is a file: pass a folder")
    try:
        paths = write_pngs(charts, args.output)
    except OSError as e:
        raise UsageError(f"cannot write into {args.output}: {e.strerror}; choose a writable folder") from None
    for path in paths:
        print(path)
    for line in charts.not_drawn:
        print(f"not drawn: {line}", file=sys.stderr)
    return 0


COMMANDS = {"report": cmd_report, "plot": cmd_plot}
