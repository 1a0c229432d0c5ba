"""`enginebench tune`: the fastest faithful configuration within a time budget (see enginebench.search)."""

from __future__ import annotations

import json

from enginebench.cli.args import DEFAULT_DB


def add_parsers(sub) -> None:
    p = sub.add_parser("tune", help="search engines × precisions × threads × batch × engine options for the "
                                    "fastest faithful configuration, within a time budget")
    lst = dict(action="append", default=None)
    p.add_argument("--model", help="registry name (minilm) or a local encoder folder [minilm]")
    p.add_argument("--objective", default="throughput",
                   help="throughput: items/s (either scenario); latency: median ms per call [throughput]")
    p.add_argument("--min-fidelity", default="0.99",
                   help="lowest min cosine against torch fp32 a candidate may have; below it, it is dropped in "
                        "round 1 whatever its speed [0.99]")
    p.add_argument("--batch-size", **lst, help="batch sizes to try [1,8,32; latency: 1 (give one)]")
    p.add_argument("--workload", help="corpus or titles [corpus]")
    p.add_argument("--engine", **lst, help="engines to try, comma list [every installed encoder engine]")
    p.add_argument("--precision", **lst, help="precisions to try [every precision each engine offers]")
    p.add_argument("--budget", default="20m", help="wall-clock time for the whole search: 90s, 20m, 1h [20m]")
    p.add_argument("--seed", default="0", help="seeds the order candidates are tried in, the workload and the "
                                               "cells' order [0]")
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database; every measured cell is stored [{DEFAULT_DB}]")
    p.add_argument("--json", action="store_true", help="print the session (rounds, recommendation) as JSON")


def cmd_tune(args) -> int:
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from enginebench.search.tune import Tuner, check_request

    request = check_request(args.model, objective=args.objective, min_fidelity=args.min_fidelity,
                            batch_size=args.batch_size, workload=args.workload, engines=args.engine,
                            precisions=args.precision, budget=args.budget, seed=args.seed, db=args.db)
    request.argv = sys.argv[2:] if sys.argv[1:2] == ["tune"] else []
    err = Console(stderr=True, soft_wrap=True)
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.fields[left]} left of {task.fields[budget]}"),
                        console=err, transient=True)
    task = progress.add_task("checking", total=request.budget_s, left="", budget=_clock(request.budget_s))

    def on_progress(text, elapsed, budget):
        progress.update(task, description=text[:70], completed=min(elapsed, budget),
                        left=_clock(max(0.0, budget - elapsed)))

    tuner = Tuner(request, on_progress=on_progress, on_note=lambda text: err.print(f"[dim]tune: {text}[/dim]"))
    tuner.prepare()  # every check before the first measurement
    err.print(f"[dim]tune: {len(tuner.space)} candidates for {tuner.base.model.name}; budget {_clock(request.budget_s)}[/dim]")
    with progress:
        tuning = tuner.run()
    if args.json:
        print(json.dumps(tuning.to_dict(), indent=2))
    else:
        print("\n".join(tuning.lines()))
    rec = tuning.recommendation
    return 0 if rec is not None and rec.best is not None else 1


def _clock(s: float) -> str:
    return f"{int(s // 60)}m{int(round(s % 60)):02d}s" if s >= 60 else f"{s:.0f}s"


COMMANDS = {"tune": cmd_tune}
