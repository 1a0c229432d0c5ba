"""The commands that read stored results: `enginebench runs` and `show`."""

from __future__ import annotations

import os
import sys

from enginebench.cli.args import DEFAULT_DB
from enginebench.errors import UsageError


def add_parsers(sub) -> None:
    runs = sub.add_parser("runs", help="list the runs stored in the database")
    runs.add_argument("--db", default=DEFAULT_DB)

    show = sub.add_parser("show", help="show or export a stored run")
    show.add_argument("run_id", nargs="?", help="run id [the newest]")
    show.add_argument("--format", default="table", choices=["table", "json", "csv", "md"])
    show.add_argument("--output", help="write to this file instead of stdout")
    show.add_argument("--db", default=DEFAULT_DB)


def cmd_runs(args) -> int:
    from enginebench.results.store import ResultStore

    with ResultStore(args.db) as store:
        rows = store.run_ids()
    if not rows:
        print(f"no runs in {args.db}")
    for run_id, created, n in rows:
        print(f"{run_id}  {created}  {n} results")
    return 0


def cmd_show(args) -> int:
    from enginebench.results.export import export
    from enginebench.results.report import render
    from enginebench.results.store import ResultStore

    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        run = store.load_run(args.run_id)
    if args.format == "table":
        render(run)
        return 0
    text = export(run, args.format)
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(text)
        except OSError as e:
            raise UsageError(f"cannot write {args.output}: {e.strerror}; choose a writable path") from None
    else:
        sys.stdout.write(text)
    return 0


COMMANDS = {"runs": cmd_runs, "show": cmd_show}
