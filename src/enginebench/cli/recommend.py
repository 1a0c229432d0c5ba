"""`enginebench recommend`: the best stored configuration under constraints (see analysis/recommend.py)."""

from __future__ import annotations

import json
import math
import os
import sys

from enginebench.cli.args import DEFAULT_DB
from enginebench.config import positive_int
from enginebench.errors import UsageError
from enginebench.search.confirm import check_processes, confirm
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    p = sub.add_parser("recommend", help="the best configuration in stored results, under constraints")
    p.add_argument("runs", nargs="*", metavar="RUN",
                   help="run ids [every stored run of the newest run's model (of --model's), judged on the newest "
                        "run's machine]")
    p.add_argument("--model", help="the model to recommend for [the newest run's]")
    p.add_argument("--workload", help="the workload judged (corpus, titles; tg128 for decoders) [the one measured]")
    p.add_argument("--min-fidelity", default="0.99",
                   help="lowest fidelity accepted (min cosine; top-1 agreement for decoders) [0.99]")
    p.add_argument("--objective", default="throughput", choices=["latency", "throughput"],
                   help="latency: median ms per call (latency scenario); throughput: items/s (either scenario) "
                        "[throughput]")
    p.add_argument("--max-memory", metavar="MB", help="highest peak RSS accepted, MB (all workers together)")
    p.add_argument("--batch-size", help="only this batch size [any; latency: the smallest measured]")
    p.add_argument("--accept-warn", action="store_true",
                   help="judge results with a warn verdict too (noisy figures), saying so")
    p.add_argument("--confirm", metavar="N", nargs="?", const="3",
                   help="measure the pick, the runner-up and the baselines again, each in N fresh interleaved "
                        "processes, and answer from that round only (the stored pick's figure flatters it) [3]")
    p.add_argument("--db", default=DEFAULT_DB)
    p.add_argument("--json", action="store_true", help="print the recommendation as one JSON object")


def _number(name: str, text: str, example: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UsageError(f"{name} {text!r} is not a number: give e.g. {name} {example}")
    return value


def constraints_from(args):
    from enginebench.analysis.recommend import Constraints

    return Constraints(
        model=args.model, workload=args.workload,
        min_fidelity=_number("--min-fidelity", args.min_fidelity, "0.99"), objective=args.objective,
        max_memory_mb=_number("--max-memory", args.max_memory, "2000") if args.max_memory is not None else None,
        batch_size=positive_int("--batch-size", args.batch_size) if args.batch_size is not None else None,
        accept_warn=args.accept_warn)


def cmd_recommend(args) -> int:
    from enginebench.analysis.recommend import load_runs, recommend

    constraints = constraints_from(args)
    processes = None if args.confirm is None else check_processes(args.confirm)
    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        runs = load_runs(store, args.runs, args.model)
    rec = recommend(runs, constraints)
    if processes is None or rec.best is None:
        print(json.dumps(rec.to_dict(), indent=2) if args.json else "\n".join(rec.lines()))
        return 0 if rec.best is not None else 1
    if not args.json:
        print("\n".join(["from the stored results:"] + rec.lines()), flush=True)
    done = confirm(rec, runs, constraints, args.db, processes,
                   on_note=None if args.json else lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(done.to_dict(), indent=2) if args.json else "\n".join([""] + done.lines()))
    return 0 if done.confirmed.best is not None else 1


COMMANDS = {"recommend": cmd_recommend}
