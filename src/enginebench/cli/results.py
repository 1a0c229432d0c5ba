"""The commands that read stored results: `enginebench runs`, `show` and `rm`."""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone

from enginebench.cli.args import DEFAULT_DB
from enginebench.config import comma_list
from enginebench.errors import UsageError
from enginebench.formats import RUNS, Choices, get_format
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    runs = sub.add_parser("runs", help="list the runs stored in the database")
    runs.add_argument("--model", action="append", help="only runs that measured this model (comma list)")
    runs.add_argument("--engine", action="append", help="only runs that measured this engine (comma list)")
    runs.add_argument("--since", help="only runs started since a date (2026-11-25, 2026-11-25T14:00) or a time "
                                      "ago (30m, 2h, 3d, 1w)")
    runs.add_argument("--db", default=DEFAULT_DB)

    show = sub.add_parser("show", help="show or export a stored run")
    show.add_argument("run_id", nargs="?", help="run id [the newest]")
    show.add_argument("--format", default="table", choices=Choices(RUNS), metavar="FORMAT",
                      help="%(choices)s (table: rich in a terminal, Markdown in a pipe) [table]; parquet needs "
                           "--output FILE, png --output DIR")
    show.add_argument("--output", metavar="FILE|DIR", help="write to this file (png: this folder) instead of stdout")
    show.add_argument("--db", default=DEFAULT_DB)

    rm = sub.add_parser("rm", help="delete stored runs with their results and samples")
    rm.add_argument("run_ids", nargs="+", metavar="RUN", help="run ids (see `enginebench runs`)")
    rm.add_argument("--db", default=DEFAULT_DB)


def _store(db: str):
    if not os.path.exists(db):
        raise UsageError(f"no database at {db}: run `enginebench run` first or pass --db")
    return ResultStore(db)


_AGO = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(m|min|h|d|w)\s*")
_AGO_UNITS = {"m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def since_time(text: str, now: datetime | None = None) -> datetime:
    """`--since`: a time ago (`30m`, `2h`, `3d`, `1w`) or an ISO date/time (local time unless it says its zone)."""
    now = now or datetime.now(timezone.utc)
    ago = _AGO.fullmatch(text)
    if ago:
        return now - timedelta(**{_AGO_UNITS[ago[2]]: float(ago[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a date nor a time ago: give e.g. --since 2026-11-25 or "
                         "--since 2h (units m, h, d, w)") from None
    return when if when.tzinfo else when.astimezone()  # a naive time is the user's local time


def cpu_short(name: str | None) -> str:
    """`Intel(R) Xeon(R) Platinum 8480C` -> `Xeon Platinum 8480C`; `AMD EPYC 7763 64-Core Processor` -> `EPYC 7763`."""
    if not name:
        return "?"
    text = re.sub(r"\((R|TM|tm)\)|\bCPU\b|\bProcessor\b|@.*$|\b\d+-Core\b|^(Intel|AMD)\b|\bwith .*$", " ", name)
    return " ".join(text.split()) or name


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def runs_rows(overviews) -> tuple[list[str], list[list[str]]]:
    """One row per run; the run id begins with its UTC start time, so there is no column for it."""
    headers = ["run", "model", "engines", "cells", "machine", "busy", "repeat"]
    rows = []
    for o in overviews:
        cells = ", ".join(f"{o.statuses[s]} {s}" for s in ("ok", "failed", "skipped") if o.statuses.get(s)) or "none"
        m = o.machine
        machine = f"{cpu_short(m.get('cpu'))}, {len(m.get('affinity') or ()) or m.get('logical_cores', '?')} cores"
        repeat = f"×{o.config.get('repeat', 1)}" + (" quick" if o.config.get("quick") else "")
        rows.append([o.run_id, ", ".join(o.models) or "—", ", ".join(o.engines) or "—", cells, machine,
                     _duration(o.busy_s), repeat])
    return headers, rows


def select_runs(overviews, models=None, engines=None, since: datetime | None = None):
    models = {m.lower() for m in models or ()}
    engines = {e.lower() for e in engines or ()}
    return [o for o in overviews
            if (not models or models & {m.lower() for m in o.models})
            and (not engines or engines & {e.lower() for e in o.engines})
            and (since is None or datetime.fromisoformat(o.created_at) >= since)]


def cmd_runs(args) -> int:
    from rich.console import Console

    from enginebench.formats.terminal import print_lines, print_table

    since = since_time(args.since) if args.since else None
    with _store(args.db) as store:
        overviews = store.run_overviews()
    chosen = select_runs(overviews, comma_list(args.model), comma_list(args.engine), since)
    console = Console()
    if not chosen:
        filtered = " matching the filters" if len(chosen) < len(overviews) else ""
        print(f"no runs{filtered} in {args.db} ({len(overviews)} stored)")
        return 0
    headers, rows = runs_rows(chosen)
    title = f"{len(chosen)} of {len(overviews)} runs in {args.db}" if len(chosen) < len(overviews) else \
        f"{len(chosen)} runs in {args.db}"
    print_table(console, title, headers, rows, keys=1, left=set(headers) - {"busy"})
    print_lines(console, ["run ids begin with the UTC start time; cores: those the run could use; busy: its "
                          "processes' load and measuring time summed (the store keeps no end time)"])
    return 0


def cmd_show(args) -> int:
    fmt = get_format(args.format)
    fmt.check_output(args.output)  # before the store is opened
    with _store(args.db) as store:
        run = store.load_run(args.run_id)
    written = fmt.render([run], args.output)
    if fmt.folder:  # several files: say which
        for path in written:
            print(path)
    return 0


def cmd_rm(args) -> int:
    with _store(args.db) as store:
        known = {o.run_id for o in store.run_overviews()}
        unknown = [r for r in args.run_ids if r not in known]
        if unknown:  # nothing is deleted when one id is wrong
            raise UsageError(f"no run {', '.join(map(repr, unknown))} in {args.db}: see `enginebench runs --db "
                             f"{args.db}`; nothing deleted")
        for run_id in dict.fromkeys(args.run_ids):
            n = store.delete_run(run_id)
            print(f"deleted run {run_id}: {n['results']} results, {n['samples']} sample arrays")
    return 0


COMMANDS = {"runs": cmd_runs, "show": cmd_show, "rm": cmd_rm}
