"""`enginebench recommend`: the best stored configuration under constraints (see analysis/recommend.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

from enginebench.cli.args import DEFAULT_DB
from enginebench.config import positive_int
from enginebench.errors import UsageError
from enginebench.search.confirm import DEFAULT_PROCESSES, check_processes, confirm, round_plan
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
    p.add_argument("--confirm", metavar="N", nargs="?", const=str(DEFAULT_PROCESSES),
                   help="before answering, measure the pick, the runner-up and the baselines again, each in N fresh "
                        "interleaved processes, and answer from that round only (the stored pick's figure flatters "
                        f"it) [{DEFAULT_PROCESSES}, whenever the stored results offer a choice and can be measured "
                        "again here]")
    p.add_argument("--no-confirm", action="store_true",
                   help="answer from the stored results alone, measuring nothing (the answer says its figure "
                        "is the luckiest of the stored ones)")
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
    if args.no_confirm and args.confirm is not None:
        raise UsageError("--confirm and --no-confirm contradict each other: give one")
    asked = args.confirm is not None  # else the round runs where it can, and its absence is said
    processes = check_processes(args.confirm if asked else DEFAULT_PROCESSES)
    if not os.path.exists(args.db):
        raise UsageError(f"no database at {args.db}: run `enginebench run` first or pass --db")
    with ResultStore(args.db) as store:
        runs = load_runs(store, args.runs, args.model)
    rec = recommend(runs, constraints)
    if rec.best is None or args.no_confirm or not (asked or rec.runner_up):
        return _answer(rec, args.json)
    try:
        planned = round_plan(rec, runs, processes)
    except UsageError as e:
        if asked:
            raise UsageError(f"--confirm cannot measure the pick again here: {e}; --no-confirm answers from the "
                             "stored results") from None
        return _answer(dataclasses.replace(rec, unconfirmed=str(e)), args.json)
    if not args.json:
        print("\n".join(["from the stored results (measured again below):"] + rec.lines(winners_curse=False)),
              flush=True)
    done = confirm(rec, runs, constraints, args.db, processes, planned=planned,
                   on_note=None if args.json else lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(done.to_dict(), indent=2) if args.json else "\n".join([""] + done.lines()))
    return 0 if done.confirmed.best is not None else 1


def _answer(rec, as_json: bool) -> int:
    print(json.dumps(rec.to_dict(), indent=2) if as_json else "\n".join(rec.lines()))
    return 0 if rec.best is not None else 1


COMMANDS = {"recommend": cmd_recommend}
