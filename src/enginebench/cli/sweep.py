"""`enginebench sweep FILE.toml`: the matrix of `run` options in a file, resumable after any interruption."""

from __future__ import annotations

import os

from enginebench.cli.args import DEFAULT_DB
from enginebench.errors import UsageError
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    sweep = sub.add_parser("sweep", help="run the matrix of a TOML sweep file; run it again to resume it")
    sweep.add_argument("file", metavar="FILE.toml", help="the sweep: any `run` option as a key (batch_size = [1, 16]), "
                       "[[model]] tables, [options.ENGINE] lists of engine option values")
    sweep.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database for results [{DEFAULT_DB}]")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells, what is stored of them and the time "
                       "left; measure nothing")
    sweep.add_argument("--retries", help="further attempts for a failed cell, each in a fresh process [the file's, else 0]")
    sweep.add_argument("--max-memory", metavar="SIZE", help="end a cell's process holding more resident memory "
                       "than this (500MB, 4GB), recorded as failed [the file's, else no limit]")
    sweep.add_argument("--retry-failed", action="store_true", help="measure again the repetitions stored as failed")
    sweep.add_argument("--take-over", action="store_true", help="run a sweep held by a process on another machine "
                       "whose heartbeat stopped (that machine crashed); never one seen alive")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run the jobs on a Ray cluster, each holding a whole node: "
                       "HOST:PORT of its head, ray://HOST:PORT, or local (a Ray started here); results come back "
                       "into --db [this machine, one process at a time]")
    sweep.add_argument("--client-nodes", metavar="N", help="with --ray, against --endpoint: share each concurrency "
                       "cell's clients out over N nodes of the cluster, started together [1]")


def cmd_sweep(args) -> int:
    from rich.console import Console

    from enginebench.sweep.spec import load_sweep

    if not args.dry_run:
        ResultStore(args.db).close()  # fail on an unwritable database before measuring anything
    sweep = load_sweep(args.file, retries=args.retries, max_memory=args.max_memory)
    err = Console(stderr=True, soft_wrap=True)
    if os.path.exists(args.db):
        from enginebench.sweep.runner import earlier_sweep_note

        with ResultStore(args.db) as store:
            note = earlier_sweep_note(sweep, store)
        if note:
            err.print(f"enginebench: {note}", highlight=False, markup=False, soft_wrap=True)
    if args.dry_run:
        return _dry_run(sweep, args, Console())
    extra = [x for flag, value in (("--retries", args.retries), ("--max-memory", args.max_memory),
                                   ("--ray", args.ray), ("--client-nodes", args.client_nodes))
             if value for x in (flag, value)]
    try:
        report = _run(sweep, args, err)
    except KeyboardInterrupt:
        from enginebench.sweep.runner import resume_command

        with ResultStore(args.db) as store:
            counts = store.sweep_cell_counts(sweep.sweep_id)
        err.print(f"enginebench: sweep {sweep.sweep_id} interrupted; {_counts(counts)} stored (a repetition in "
                  f"flight was dropped). Resume with: {resume_command(args.file, args.db, extra)}",
                  highlight=False, markup=False, soft_wrap=True)
        return 130
    except UsageError:
        raise
    _summary(sweep, report, args, Console(), err)
    return 0 if report.counts.get("ok") else 1


def _counts(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    detail = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{total} cells ({detail})" if total else "no cells"


def _run(sweep, args, err):
    from enginebench.cli.progress import cell_progress
    from enginebench.sweep.runner import run_sweep

    bar = cell_progress(err, eta=True)
    with bar.progress:
        return run_sweep(sweep, args.db, retry_failed=args.retry_failed, on_start=bar.on_start,
                         on_result=bar.on_result, on_total=bar.on_total, ray=args.ray,
                         take_over=args.take_over, client_nodes=args.client_nodes)


def _summary(sweep, report, args, out, err) -> None:
    from enginebench.formats.terminal import print_lines, print_table
    from enginebench.sweep.runner import part_states

    with ResultStore(args.db) as store:
        states = part_states(sweep, store)
    rows = []
    for s in states:
        statuses = [r.status for r in s.stored.values()]
        rows.append([s.part.label, s.run_id, str(statuses.count("ok")), str(statuses.count("failed")),
                     str(statuses.count("skipped")), str(len(s.keys) - len(statuses))])
    print_table(out, f"sweep {sweep.sweep_id}: {_counts(report.counts)}",
                ["part", "run", "ok", "failed", "skipped", "missing"], rows, keys=1, left={"part", "run"})
    lines = [f"{report.measured_now} measurements stored now; `enginebench show RUN --db {args.db}` shows a part"]
    if report.counts.get("failed"):
        lines.append(f"failed cells keep their reason and every attempt (details.attempts); measure them again "
                     f"with: enginebench sweep {args.file} --retry-failed" + (f" --db {args.db}" if args.db != DEFAULT_DB else ""))
    print_lines(err, lines)


def _dry_run(sweep, args, out) -> int:
    from enginebench.formats.terminal import print_lines, print_table
    from enginebench.sweep.estimate import duration_text, estimate, stored_cell_extras, stored_load_times
    from enginebench.sweep.runner import part_states

    with ResultStore(args.db if os.path.exists(args.db) else ":memory:") as store:
        states = part_states(sweep, store, args.retry_failed)
        loads, extras = stored_load_times(store), stored_cell_extras(store)
    rows = []
    for s in states:
        plan = s.part.plan
        for index, cell in enumerate(plan.indexed_cells()):
            state = "skipped" if index >= len(plan.cells) or s.launcher.why_not(cell) else s.cell_status(index)
            rows.append([s.part.label, cell.engine, cell.precision, cell.scenario, cell.workload, str(cell.batch_size),
                         str(cell.workers), str(cell.threads), state])
    print_table(out, f"sweep {sweep.sweep_id} (dry run): {len(rows)} cells",
                ["part", "engine", "precision", "scenario", "workload", "batch", "workers", "threads", "state"],
                rows, keys=2, left={"part", "engine", "precision", "scenario", "workload", "state"})
    est = estimate(states, loads, extras)
    repeat = sorted({p.plan.repeat for p in sweep.parts})
    print_lines(out, [f"{est.to_measure} measurements to run ({est.cells} cells × repeat "
                      f"{'/'.join(map(str, repeat))}, less what is stored): about {duration_text(est.total_s)} "
                      f"(measuring {duration_text(est.measure_s)}, {est.loads} model loads "
                      f"{duration_text(est.load_s)}"
                      + (f", {duration_text(est.extra_s)} beyond the durations as stored runs took"
                         if est.extra_s >= 1 else "") + ")"])
    return 0


COMMANDS = {"sweep": cmd_sweep}
