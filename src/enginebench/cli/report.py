"""The commands that draw stored runs: `enginebench report --html FILE` and `enginebench plot --output DIR`,
kept for the scripts that use them: each is the html or png format (formats/), as `show --format html|png
--output` is, over one or more runs."""

from __future__ import annotations

import os

from enginebench.cli.args import DEFAULT_DB
from enginebench.errors import UsageError
from enginebench.formats import get_format
from enginebench.store.database import ResultStore


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
    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        return [store.load_run(run_id) for run_id in (list(dict.fromkeys(args.run_ids)) or [None])]


def cmd_report(args) -> int:
    html = get_format("html")
    html.check_output(args.html, "--html")
    runs = _load_runs(args)
    html.render(runs, args.html)
    print(f"wrote {args.html} ({', '.join('run ' + run.run_id for run in runs)})")
    return 0


def cmd_plot(args) -> int:
    png = get_format("png")
    png.check_output(args.output)
    for path in png.render(_load_runs(args), args.output):
        print(path)
    return 0


COMMANDS = {"report": cmd_report, "plot": cmd_plot}
