"""The command line: `enginebench run | runs | show | engines | models`."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from datetime import datetime, timezone

from enginebench.errors import UsageError

DEFAULT_DB = "enginebench.db"
DEFAULT_BATCH_SIZES = [1, 16, 32, 64]
# `enginebench run` with no options: every installed engine, both workloads, both scenarios, short cells,
# so the whole suite ends in about three minutes on 2 cores.
DEFAULT_SUITE = {"duration": 1.0, "min_samples": 5, "warmup": 0.3, "batch_size": [1, 32]}
SELECTION_OPTIONS = ("engine", "model", "precision", "workload", "scenario", "batch_size", "workers", "threads",
                     "threads_per_worker", "seq_len", "duration", "min_samples", "warmup", "corpus")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a whole number: give e.g. {name} 8") from None
    if value < 1:
        raise UsageError(f"{name} {value} must be at least 1")
    return value


def _seconds(name: str, text: str | float, allow_zero: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} {text!r} is not a number of seconds: give e.g. {name} 10") from None
    if value != value or value < 0 or (value == 0 and not allow_zero) or value == float("inf"):
        raise UsageError(f"{name} {text} must be a positive number of seconds")
    return value


def _list(values: list[str] | None) -> list[str] | None:
    """Comma lists and repeated options, flattened, order kept, duplicates dropped."""
    if values is None:
        return None
    out: list[str] = []
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="enginebench", description="Benchmark ML inference engines side by side on real models.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="measure engines on a model (no options: the default suite)")
    lst = dict(action="append", default=None)
    run.add_argument("--model", help="registry name (minilm) or a local model folder [minilm]")
    run.add_argument("--engine", **lst, help="engines, comma list or repeated [every installed engine]")
    run.add_argument("--precision", **lst, help="precisions [fp32]")
    run.add_argument("--workload", **lst, help="corpus, titles [both]")
    run.add_argument("--scenario", **lst, help="latency, throughput [both]")
    run.add_argument("--batch-size", **lst, help="batch sizes [1,16,32,64]")
    run.add_argument("--workers", **lst, help="parallel workers in the throughput scenario [number of CPUs]")
    run.add_argument("--threads", **lst, help="threads per session in the latency scenario [number of CPUs]")
    run.add_argument("--threads-per-worker", **lst, help="threads per worker in the throughput scenario [CPUs / workers]")
    run.add_argument("--seq-len", help="corpus tokens per input, truncated or padded [128]")
    run.add_argument("--corpus", help="corpus file: .txt (a document per line), .jsonl (field text), .parquet (column text) [Python's docs]")
    run.add_argument("--seed", default="0", help="workload sampling seed [0]")
    run.add_argument("--duration", help="seconds to measure each cell, at least [10]")
    run.add_argument("--min-samples", help="calls to measure each cell, at least [10]")
    run.add_argument("--warmup", help="warm-up seconds per cell, not counted [1]")
    run.add_argument("--timeout", default="600", help="seconds before a cell is abandoned as hung [600]")
    run.add_argument("--option", "-o", action="append", default=[], metavar="ENGINE.KEY=VALUE",
                     help="engine option, e.g. onnxruntime.graph_optimization=basic (see `enginebench engines`)")
    run.add_argument("--cpus", help="pin the benchmark to these CPUs, taskset syntax: 0-7 or 0,2,4")
    run.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database for results [{DEFAULT_DB}]")
    run.add_argument("--json", action="store_true", help="print the run as one JSON object on stdout")

    runs = sub.add_parser("runs", help="list the runs stored in the database")
    runs.add_argument("--db", default=DEFAULT_DB)

    show = sub.add_parser("show", help="show or export a stored run")
    show.add_argument("run_id", nargs="?", help="run id [the newest]")
    show.add_argument("--format", default="table", choices=["table", "json", "csv", "md"])
    show.add_argument("--output", help="write to this file instead of stdout")
    show.add_argument("--db", default=DEFAULT_DB)

    engines = sub.add_parser("engines", help="the engine feature table, probed on this machine")
    engines.add_argument("--json", action="store_true")

    sub.add_parser("models", help="the models enginebench knows by name")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 2
        return {"run": cmd_run, "runs": cmd_runs, "show": cmd_show, "engines": cmd_engines,
                "models": cmd_models}[args.command](args)
    except UsageError as e:
        print(f"enginebench: error: {e}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print("enginebench: interrupted; results measured so far are in the database", file=sys.stderr)
        return 130


# -- run --------------------------------------------------------------------------------------------

def _engine_options(raw: list[str], engines: list[str]) -> dict[str, dict[str, str]]:
    from enginebench.engines import engine_class

    options: dict[str, dict[str, str]] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        engine, dot, name = key.partition(".")
        if not (eq and dot and engine and name):
            raise UsageError(f"--option {item!r} is not ENGINE.KEY=VALUE: write e.g. -o onnxruntime.graph_optimization=basic")
        engine_class(engine)  # unknown engine -> UsageError
        options.setdefault(engine, {})[name] = value
    for engine, overrides in options.items():
        try:
            engine_class(engine).make_options(1, overrides)
        except (KeyError, ValueError, TypeError) as e:
            raise UsageError(f"bad --option for {engine}: {str(e).strip(chr(39))}") from None
    return options


def plan_from_args(args):
    """Validate every option and build the Plan (raises UsageError on bad input)."""
    from enginebench.engines import installed_engines, require_engine
    from enginebench.measure.timing import StoppingRule
    from enginebench.models import resolve_model
    from enginebench.plan import Plan, make_cells
    from enginebench.scenarios import SCENARIOS
    from enginebench.workloads import DEFAULT_CORPUS, WORKLOADS, build_workload

    suite = not any(getattr(args, name) is not None for name in SELECTION_OPTIONS)
    defaults = DEFAULT_SUITE if suite else {"duration": 10.0, "min_samples": 10, "warmup": 1.0,
                                            "batch_size": DEFAULT_BATCH_SIZES}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    engines = _list(args.engine)
    if engines:
        for name in engines:
            require_engine(name)
    else:
        engines = installed_engines()
        if not engines:
            raise UsageError("no engine is installed: pip install 'enginebench[all]' (or make bench)")
    precisions = _list(args.precision) or ["fp32"]
    workloads = _list(args.workload) or list(WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            raise UsageError(f"unknown workload {w!r}: use one of {', '.join(WORKLOADS)}")
    scenarios = _list(args.scenario) or list(SCENARIOS)
    for s in scenarios:
        if s not in SCENARIOS:
            raise UsageError(f"unknown scenario {s!r}: use one of {', '.join(SCENARIOS)}")
    batch_sizes = [_positive_int("--batch-size", b) for b in _list(args.batch_size) or []] or defaults["batch_size"]
    workers = [_positive_int("--workers", w) for w in _list(args.workers) or []] or [cores]
    threads = {
        "latency": [_positive_int("--threads", t) for t in _list(args.threads) or []],
        "throughput": [_positive_int("--threads-per-worker", t) for t in _list(args.threads_per_worker) or []],
    }
    seq_len = _positive_int("--seq-len", args.seq_len) if args.seq_len is not None else 128
    seed = int(args.seed) if args.seed.isdigit() else -1
    if seed < 0:
        raise UsageError(f"--seed {args.seed!r} must be a whole number >= 0")
    rule = StoppingRule(
        duration_s=_seconds("--duration", args.duration if args.duration is not None else defaults["duration"]),
        min_samples=_positive_int("--min-samples", args.min_samples) if args.min_samples else defaults["min_samples"],
        warmup_s=_seconds("--warmup", args.warmup if args.warmup is not None else defaults["warmup"], allow_zero=True),
    )
    timeout = _seconds("--timeout", args.timeout)
    options = _engine_options(args.option, engines)

    model = resolve_model(args.model or "minilm")
    data = {w: build_workload(w, model.path, seq_len=seq_len, seed=seed, corpus=args.corpus or DEFAULT_CORPUS,
                              max_positions=model.max_positions) for w in workloads}
    cells = make_cells(engines, precisions, workloads, batch_sizes, scenarios, workers, threads, cores)
    return Plan(model, data, cells, rule, options, timeout_s=timeout), suite


def cmd_run(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from enginebench.measure.machine import machine_info, parse_cpu_list
    from enginebench.orchestrator import Orchestrator
    from enginebench.results.export import to_json
    from enginebench.results.model import Run
    from enginebench.results.report import render
    from enginebench.results.store import ResultStore

    if args.cpus:
        try:
            os.sched_setaffinity(0, parse_cpu_list(args.cpus))
        except (ValueError, OSError) as e:
            raise UsageError(f"--cpus {args.cpus!r} is not usable here ({e}): give CPUs this machine has, e.g. --cpus 0-{(os.cpu_count() or 1) - 1}") from None
    store = ResultStore(args.db)  # fail on an unwritable database before measuring anything
    plan, suite = plan_from_args(args)
    err = Console(stderr=True)
    if suite:
        engines = sorted({c.engine for c in plan.cells})
        err.print(f"[dim]default suite: {plan.model.name} on {', '.join(engines)}; {len(plan.cells)} cells of "
                  f"{plan.rule.duration_s:g} s (pass options to choose; see enginebench run --help)[/dim]")
    run = Run(
        run_id=datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(),
        config={"argv": sys.argv[1:], "model": plan.model.to_dict(), "stopping_rule": plan.rule.to_dict(),
                "timeout_s": plan.timeout_s, "engine_options": plan.engine_options,
                "workloads": {k: w.spec.to_dict() for k, w in plan.workloads.items()}},
    )
    store.add_run(run)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, auto_refresh=False, transient=True)
    task = progress.add_task("starting", total=len(plan.cells))

    def on_start(cell):
        progress.update(task, description=cell.label())
        progress.refresh()

    def emit(result):
        store.add_result(run.run_id, result)  # committed before anything else can go wrong
        run.results.append(result)
        progress.advance(task)
        progress.refresh()

    with progress:
        Orchestrator(plan, on_start=on_start).run(emit)
    store.close()
    if args.json:
        print(to_json(run))
    else:
        render(run, Console())
        err.print(f"[dim]stored in {args.db} as run {run.run_id}: `enginebench show --format json` to export[/dim]")
    return 0 if any(r.status == "ok" for r in run.results) else 1


# -- other commands ---------------------------------------------------------------------------------

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


def cmd_engines(args) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from enginebench.engines import REGISTRY, engine_class

    infos = [engine_class(name).describe() for name in REGISTRY]
    if args.json:
        print(json.dumps([{**i.__dict__, "installed": i.installed} for i in infos], indent=2))
        return 0
    table = Table(title="engines")
    for h in ("engine", "installed", "version", "devices", "precisions", "formats", "install"):
        table.add_column(h)
    for i in infos:
        table.add_row(i.name, "yes" if i.installed else "no", i.version or "—", ",".join(i.devices) or "—",
                      ",".join(i.precisions), ",".join(i.formats), i.install)
    Console().print(table)
    return 0


def cmd_models(args) -> int:
    from enginebench.models import KNOWN_MODELS

    for name, (_, description) in KNOWN_MODELS.items():
        print(f"{name:12} {description}")
    print("or --model PATH: a local BERT-family folder (config.json, *.safetensors, tokenizer.json)")
    return 0
