"""The command line: `enginebench run | runs | show | engines | models`."""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import uuid
from datetime import datetime, timezone

from enginebench import graph_cli
from enginebench.errors import UsageError

DEFAULT_DB = "enginebench.db"
# `run`'s defaults for the options below, as they would be typed; `run --quick` (every installed engine, both
# workloads, both scenarios, short cells: the whole suite in about four minutes on 2 cores) has its own.
FULL = {"duration": "10s", "min_samples": "10", "warmup": "1s", "batch_size": ["1,16,32,64"], "repeat": "3"}
QUICK = {"duration": "1s", "min_samples": "5", "warmup": "0.3s", "batch_size": ["1"], "repeat": "1"}
NATIVE = "native"  # the precision of a model as it came (a GGUF file's own quant type: see engines/llamacpp.py)
DURATION_OPTIONS = {"--duration": "10s", "--warmup": "1s", "--timeout": "10m", "--load-timeout": "30m"}  # -> example
DEFAULT_PROMPT_LENS = [128, 512]  # decoders: pp tests (llama-bench's pp512 and a shorter one)
DEFAULT_GEN_LENS = [128]  # decoders: tg tests


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


_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s|m|h)?\s*")


def _seconds(name: str, text: str, allow_zero: bool = False) -> float:
    """A duration in seconds from `10s`, `500ms`, `2m`, `1.5h` or a bare number of seconds."""
    example = f"{name} {DURATION_OPTIONS.get(name, '10s')}"
    match = _DURATION.fullmatch(str(text))
    value = float(match[1]) * _UNITS[match[2] or "s"] if match else math.nan
    if not math.isfinite(value):
        raise UsageError(f"{name} {text!r} is not a duration: give e.g. {example} (units ms, s, m, h; "
                         "a bare number is seconds)")
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} {text!r} must be {'zero or more' if allow_zero else 'more than zero'}: "
                         f"give e.g. {example}")
    return value


def _attach_negative_durations(argv: list[str]) -> list[str]:
    """argparse reads `--duration -1s` as two options; pass `--duration=-1s` so that the duration's own check
    says what is wrong with it."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in DURATION_OPTIONS and re.match(r"-[\d.]", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


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

    run = sub.add_parser("run", help="measure engines on a model (--quick: the quick suite)")
    lst = dict(action="append", default=None)
    run.add_argument("--model", help="registry name (minilm) or a local model folder [minilm]")
    run.add_argument("--engine", **lst, help="engines, comma list or repeated [every installed engine]")
    run.add_argument("--precision", **lst,
                     help="precisions [the model's own where it has one (a GGUF file: native), else fp32]")
    run.add_argument("--workload", **lst, help="corpus, titles [both]")
    run.add_argument("--scenario", **lst, help="latency, throughput [both]")
    run.add_argument("--batch-size", **lst, help="batch sizes [1,16,32,64; decoders and --quick: 1]")
    run.add_argument("--workers", **lst, help="parallel workers in the throughput scenario [number of CPUs]")
    run.add_argument("--threads", **lst, help="threads per session in the latency scenario [number of CPUs]")
    run.add_argument("--threads-per-worker", **lst, help="threads per worker in the throughput scenario [CPUs / workers]")
    run.add_argument("--seq-len", help="corpus tokens per input, truncated or padded [128]")
    run.add_argument("--prompt-len", **lst, help="decoders: prompt tokens prefilled, one pp test each [128,512]")
    run.add_argument("--gen-len", **lst, help="decoders: tokens generated, one tg test each [128]")
    run.add_argument("--llm-config", metavar="FILE", help="decoders: a JSON file of Llama config fields; "
                     "benchmarks a Llama of that shape with random weights (instead of --model)")
    run.add_argument("--corpus", help="corpus file: .txt (a document per line), .jsonl (field text), .parquet (column text) [Python's docs]")
    run.add_argument("--seed", default="0", help="seeds the workload sampling and the order of cells per repetition [0]")
    run.add_argument("--quick", action="store_true", help="the quick suite: batch 1, cells of 1s and 5 calls after "
                     "0.3s warm-up, 1 process per cell; options given still apply")
    run.add_argument("--duration", help="time to measure each cell, at least: 10s, 500ms, 2m, 1.5h [10s; --quick: 1s]")
    run.add_argument("--min-samples", help="calls to measure each cell, at least [10; --quick: 5]")
    run.add_argument("--warmup", help="warm-up time per cell, not counted [1s; --quick: 0.3s]")
    run.add_argument("--repeat", help="independent processes that measure each cell [3; --quick: 1]")
    run.add_argument("--timeout", default="10m", help="time before a cell's measurement is abandoned as hung [10m]")
    run.add_argument("--load-timeout", default="30m", help="time a model's load (conversion, compilation) may take [30m]")
    run.add_argument("--option", "-o", action="append", default=[], metavar="ENGINE.KEY=VALUE",
                     help="engine option, e.g. onnxruntime.graph_optimization=basic (see `enginebench engines`)")
    run.add_argument("--cpus", help="pin the benchmark to these CPUs, taskset syntax: 0-7 or 0,2,4")
    run.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database for results [{DEFAULT_DB}]")
    run.add_argument("--json", action="store_true", help="print the run as one JSON object on stdout")
    run.add_argument("--until", metavar="NODE", help="run the model cut at this ONNX node's output (see `enginebench nodes`); "
                     "only engines that load ONNX run it, compared with onnxruntime fp32 on the same cut")

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
    machine = sub.add_parser("machine", help="measure memory bandwidth and GEMM FLOP/s once (the decode roofline)")
    machine.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database to store them in [{DEFAULT_DB}]")
    machine.add_argument("--json", action="store_true", help="print the measurement as JSON")
    graph_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(_attach_negative_durations(argv))
        if args.command is None:
            build_parser().print_help()
            return 2
        return {"run": cmd_run, "runs": cmd_runs, "show": cmd_show, "engines": cmd_engines,
                "models": cmd_models, "machine": cmd_machine, "nodes": graph_cli.cmd_nodes, "blocks": graph_cli.cmd_blocks}[args.command](args)
    except UsageError as e:
        print(f"enginebench: error: {e}", file=sys.stderr)
        return UsageError.exit_code
    except KeyboardInterrupt:
        print("enginebench: interrupted; results measured so far are in the database", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug of ours: one line, and the database keeps what was measured
        if os.environ.get("ENGINEBENCH_DEBUG"):
            raise
        print(f"enginebench: internal error: {type(e).__name__}: {e} (results measured so far are in the "
              "database; ENGINEBENCH_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


# -- run --------------------------------------------------------------------------------------------

def _engine_options(raw: list[str], engines: list[str] | None = None) -> dict[str, dict[str, str]]:
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
        except (KeyError, ValueError, TypeError) as e:  # the message names the engine, the option and its values
            raise UsageError(f"bad --option: {str(e).strip(chr(39))}") from None
    return options


def plan_from_args(args):
    """Validate every option and build the Plan (raises UsageError on bad input); returns (plan, quick).

    The cheap checks come first: resolving the model may convert or write gigabytes."""
    from enginebench.engines import engine_class, installed_engines, require_engine
    from enginebench.measure.timing import StoppingRule
    from enginebench.plan import Plan, make_cells
    from enginebench.scenarios import DECODER_SCENARIOS, SCENARIOS
    from enginebench.workloads import DEFAULT_CORPUS, WORKLOADS, build_workload

    defaults = QUICK if args.quick else FULL

    def given(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    engines = _list(args.engine)
    for name in engines or []:
        require_engine(name)
    precisions = _list(args.precision)
    known = _known_precisions()
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r}: use one of {', '.join(known)}")
    workloads = _list(args.workload) or list(WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            raise UsageError(f"unknown workload {w!r}: use one of {', '.join(WORKLOADS)}")
    scenarios = _list(args.scenario) or list(SCENARIOS)
    for s in scenarios:
        if s not in SCENARIOS + DECODER_SCENARIOS:
            raise UsageError(f"unknown scenario {s!r}: use one of {', '.join(SCENARIOS + DECODER_SCENARIOS)}")
    batch_sizes = [_positive_int("--batch-size", b) for b in _list(given("batch_size"))]
    workers = [_positive_int("--workers", w) for w in _list(args.workers) or []] or [cores]
    threads = {
        "latency": [_positive_int("--threads", t) for t in _list(args.threads) or []],
        "throughput": [_positive_int("--threads-per-worker", t) for t in _list(args.threads_per_worker) or []],
    }
    seq_len = _positive_int("--seq-len", args.seq_len) if args.seq_len is not None else 128
    seed = int(args.seed) if args.seed.isdigit() else -1
    if seed < 0:
        raise UsageError(f"--seed {args.seed!r} must be a whole number >= 0")
    rule = StoppingRule(duration_s=_seconds("--duration", given("duration")),
                        min_samples=_positive_int("--min-samples", given("min_samples")),
                        warmup_s=_seconds("--warmup", given("warmup"), allow_zero=True))
    common = dict(rule=rule, engine_options=_engine_options(args.option),
                  repeat=_positive_int("--repeat", given("repeat")), timeout_s=_seconds("--timeout", args.timeout),
                  load_timeout_s=_seconds("--load-timeout", args.load_timeout),
                  order_seed=seed)  # --seed also seeds each repetition's shuffle of the cells' order

    model = _resolve_run_model(args)
    if not engines:
        engines = [e for e in installed_engines() if model.kind in engine_class(e).model_kinds]
        if not engines:
            raise UsageError(f"no engine that runs {model.kind} models is installed: pip install 'enginebench[all]' (or make bench)")
    # a model that came in its own format (a GGUF file) runs as it is unless asked otherwise, as llama-bench would
    precisions = precisions or ([NATIVE] if model.gguf_path else ["fp32"])
    if model.kind == "decoder":
        return _decoder_plan(args, model, engines, precisions, threads["latency"], cores, seed, common), args.quick
    if "generate" in scenarios:
        raise UsageError(f"scenario generate needs a decoder (LLM): {model.name} is an {model.kind}; "
                         "use --model smollm2-135m or latency/throughput")
    if getattr(args, "until", None):
        model = graph_cli.cut_model_spec(model, args.until)
    data = {w: build_workload(w, model.path, seq_len=seq_len, seed=seed, corpus=args.corpus or DEFAULT_CORPUS,
                              max_positions=model.max_positions) for w in workloads}
    cells = make_cells(engines, precisions, workloads, batch_sizes, scenarios, workers, threads, cores)
    reference = graph_cli.CUT_REFERENCE_ENGINE if model.until else "torch"
    return Plan(model, data, cells, reference_engine=reference, **common), args.quick


def _known_precisions() -> list[str]:
    """Every precision some engine offers (installed or not), in first-seen order."""
    from enginebench.engines import engine_class, known_engines

    known: list[str] = []
    for name in known_engines():
        try:
            precisions = engine_class(name).precisions
        except ImportError:  # a plugin that does not import: its precisions are unknown
            continue
        known += [p for p in precisions if p not in known]
    return known


def _resolve_run_model(args):
    from enginebench.models import resolve_model

    if getattr(args, "llm_config", None):
        if args.model:
            raise UsageError("give --model or --llm-config, not both")
        from enginebench.models.decoder_folder import decoder_from_config_file

        return decoder_from_config_file(args.llm_config)
    return resolve_model(args.model or "minilm")


def _decoder_plan(args, model, engines, precisions, threads, cores, seed, common):
    """The plan for a decoder: scenario generate, one cell per engine x precision x batch x test; the tests
    that do not fit the model's positions become skipped cells with the reason."""
    from enginebench.plan import Plan, make_decoder_cells
    from enginebench.workloads import DEFAULT_CORPUS
    from enginebench.workloads.prompts import build_prompt_sets, decoder_tests

    scenarios = _list(args.scenario) or ["generate"]
    if scenarios != ["generate"]:
        raise UsageError(f"{model.name} is a decoder (LLM): only scenario generate runs it, not "
                         f"{', '.join(s for s in scenarios if s != 'generate')}")
    if args.workload or args.seq_len:
        raise UsageError("--workload/--seq-len are for encoders: decoders take --prompt-len and --gen-len")
    prompt_lens = [_positive_int("--prompt-len", n) for n in _list(args.prompt_len) or []] or DEFAULT_PROMPT_LENS
    gen_lens = [_positive_int("--gen-len", n) for n in _list(args.gen_len) or []] or DEFAULT_GEN_LENS
    if min(gen_lens) < 2:
        raise UsageError("--gen-len must be at least 2: decode steps follow the first token")
    tests, dropped = decoder_tests(prompt_lens, gen_lens, model.max_positions)
    if not tests:
        raise UsageError(f"no test fits {model.name}'s {model.max_positions} positions: " + "; ".join(dropped))
    kept = {t.name for t in tests}
    reasons = {reason.split(" ", 1)[0]: reason for reason in dropped}  # each reason starts with its test's name
    for name, reason in reasons.items():
        if name in kept:  # a test that runs, shortened to fit
            print(f"enginebench: {reason}", file=sys.stderr)
    missing = [name for name in reasons if name not in kept]
    batch_sizes = [_positive_int("--batch-size", b) for b in _list(args.batch_size) or []] or [1]
    sets = build_prompt_sets(model.path, tests, seed=seed, corpus=args.corpus or DEFAULT_CORPUS,
                             max_positions=model.max_positions)
    cells = make_decoder_cells(engines, precisions, list(sets), batch_sizes, threads, cores)
    skips = [(cell, reasons[cell.workload])
             for cell in make_decoder_cells(engines, precisions, missing, batch_sizes, threads, cores)]
    return Plan(model, sets, cells, reference_engine="torch", skips=skips, **common)


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
    plan, quick = plan_from_args(args)
    if plan.model.kind == "decoder":
        import socket

        speed = store.machine_speed(socket.gethostname())
        plan.machine_speed = {k: speed[k] for k in ("bandwidth_gbs", "gemm_gflops", "measured_at")} if speed else None
    err = Console(stderr=True)
    if quick:
        engines = sorted({c.engine for c in plan.cells})
        err.print(f"[dim]quick suite: {plan.model.name} on {', '.join(engines)}; {len(plan.cells)} cells of "
                  f"{plan.rule.duration_s:g} s (drop --quick for the full defaults; see enginebench run --help)[/dim]")
    orchestrator = Orchestrator(plan)
    run = Run(
        run_id=datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=machine_info(),
        config={"argv": sys.argv[1:], "model": plan.model.to_dict(), "stopping_rule": plan.rule.to_dict(),
                "timeout_s": plan.timeout_s, "load_timeout_s": plan.load_timeout_s, "quick": quick,
                "engine_options": plan.engine_options,
                "workloads": {k: w.spec.to_dict() for k, w in plan.workloads.items()},
                "repeat": plan.repeat, "order_seed": plan.order_seed, "cell_order": orchestrator.cell_order()},
    )
    store.add_run(run)

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, auto_refresh=False, transient=True)
    task = progress.add_task("starting", total=orchestrator.deliveries())

    def on_start(cell):
        progress.update(task, description=cell.label())
        progress.refresh()

    orchestrator.on_start = on_start
    by_cell: dict[int, object] = {}

    def emit(index, result):
        store.add_result(run.run_id, result, cell=index)  # committed before anything else can go wrong
        by_cell[index] = result
        progress.advance(task)
        progress.refresh()

    with progress:
        orchestrator.run(emit)
    run.results = [by_cell[i] for i in sorted(by_cell)]
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
    from enginebench.results.feature_table import probe_engines, render_feature_table, to_json

    infos = probe_engines()
    if args.json:
        print(to_json(infos))
    else:
        render_feature_table(infos)
    return 0


def cmd_machine(args) -> int:
    import json

    from enginebench.measure.roofline import measure_machine
    from enginebench.results.store import ResultStore

    with ResultStore(args.db) as store:
        speed = measure_machine()
        store.add_machine_speed(speed)
    if args.json:
        print(json.dumps(speed, indent=2))
    else:
        triad = speed["details"]["triad"]
        print(f"memory bandwidth {speed['bandwidth_gbs']:.1f} GB/s (triad, {triad['threads']} threads, best of "
              f"{len(triad['runs_s'])})  ·  GEMM {speed['gemm_gflops']:.1f} GFLOP/s (numpy float32 "
              f"{speed['details']['gemm']['n']}²)  ·  stored in {args.db}")
    return 0


def cmd_models(args) -> int:
    from enginebench.models import KNOWN_MODELS

    for name, (_, description) in KNOWN_MODELS.items():
        print(f"{name:20} {description}")
    print("or --model PATH: a local BERT-family folder (config.json, *.safetensors, tokenizer.json),")
    print("  a Llama folder (config.json, *.safetensors, tokenizer.json) or a .gguf file; --llm-config FILE for a synthetic Llama shape")
    return 0
