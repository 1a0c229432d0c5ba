"""The graph commands: `enginebench nodes` (the exported graph's nodes, to pick a cut point), `run --until NODE`
(a partial model), and `enginebench blocks` (time per block: embeddings, each layer, pooling)."""

from __future__ import annotations

import json
import os
from dataclasses import replace

from enginebench.api import execute
from enginebench.cli.args import DEFAULT_DB
from enginebench.config import comma_list, engine_options, positive_int, seconds
from enginebench.engines import engine_class, known_engines, require_engine
from enginebench.engines.base import splitting_calls
from enginebench.errors import UsageError
from enginebench.formats.tables.graph import breakdown_dict, format_nodes, nodes_json, render_breakdown
from enginebench.measure.timing import StoppingRule
from enginebench.models import resolve_model
from enginebench.models.onnx_export import onnx_encoder
from enginebench.models.onnx_graph import list_nodes
from enginebench.models.spec import ModelSpec
from enginebench.plan import Plan
from enginebench.scenarios.base import Grid
from enginebench.scenarios.blocks import Blocks, block_facts, block_files, block_settings, breakdown_of, full_graph
from enginebench.store.database import ResultStore
from enginebench.workloads import WORKLOADS, WorkloadData, build_workload


def add_parsers(sub) -> None:
    nodes = sub.add_parser("nodes", help="the exported ONNX graph's nodes and outputs (cut points for run --until)")
    nodes.add_argument("--model", default="minilm", help="registry name or a local model folder [minilm]")
    nodes.add_argument("--grep", help="only nodes whose name, op type or output contains this text")
    nodes.add_argument("--json", action="store_true")

    blocks = sub.add_parser("blocks", help="time each block of the encoder (embeddings, each layer, pooling) per "
                                           "engine")
    blocks.add_argument("--model", default="minilm", help="registry name or a local model folder [minilm]")
    blocks.add_argument("--engine", action="append", default=None,
                        help="engines that load ONNX graphs, comma list [every installed one]")
    blocks.add_argument("--batch-size", default="1", help="inputs per call [1]")
    blocks.add_argument("--workload", default="corpus", help="corpus or titles [corpus]")
    blocks.add_argument("--seq-len", default="128", help="corpus tokens per input [128]")
    blocks.add_argument("--duration", default="1s", help="time to measure each block, at least [1s]")
    blocks.add_argument("--min-samples", default="10", help="calls to measure each block, at least [10]")
    blocks.add_argument("--warmup", default="0.2s", help="warm-up time per block [0.2s]")
    blocks.add_argument("--threads", help="threads per engine [number of CPUs]")
    blocks.add_argument("--timeout", default="30m", help="time one block may take on an engine (in its process's "
                        "first block, loading every block and chaining the inputs through them included) before the "
                        "engine's process is ended; a fresh one goes on with the rest [30m]")
    blocks.add_argument("--option", "-o", action="append", default=[], metavar="ENGINE.KEY=VALUE")
    blocks.add_argument("--db", default=DEFAULT_DB, help="SQLite database: each block's samples are stored there as "
                        f"a run (`enginebench show RUN` prints this table again) [{DEFAULT_DB}]")
    blocks.add_argument("--json", action="store_true", help="print the breakdown as JSON")


def _full_onnx(model_name: str):
    require_engine("onnxruntime")  # the export needs torch + onnx: say how to install them if missing
    model = resolve_model(model_name)
    path, _ = onnx_encoder(model)
    return model, path


def cmd_nodes(args) -> int:
    _, path = _full_onnx(args.model)
    nodes = list(enumerate(list_nodes(path)))
    if args.grep:
        text = args.grep.lower()
        nodes = [(i, n) for i, n in nodes if text in f"{n.name} {n.op_type} {' '.join(n.outputs)}".lower()]
    print(nodes_json(nodes) if args.json else format_nodes(nodes))
    return 0


def blocks_plan(model: ModelSpec, engines: list[str], workload: WorkloadData, batch_size: int, rule: StoppingRule,
                threads: int, timeout_s: float, options: dict[str, dict[str, str]]) -> Plan:
    """Every block of `model` (and the whole graph) on every engine as cells of the blocks scenario, engine by
    engine, each engine in child processes of its own, `timeout_s` for one cell; an engine that does not load ONNX
    graphs has its cells stored as skipped, with the reason."""
    blocks = block_files(model)
    settings = block_settings([b for b, _ in blocks])
    grid = Grid(engines, ["fp32"], [workload.spec.name], [batch_size], [1], [threads], [], threads)
    scenario = Blocks()
    cells, skips = [], []
    for engine in engines:
        made = scenario.cells(replace(grid, engines=[engine]), settings)
        if engine_class(engine).cuts_graph:
            cells += made
        else:
            skips += [(c, f"{engine} does not load ONNX graphs, so it cannot time blocks") for c in made]
    return Plan(model, {workload.spec.name: workload}, cells, rule, options, timeout_s=timeout_s,
                reference_engine=None, load_timeout_s=timeout_s, load_timeout_flag="--timeout", skips=skips,
                context={"blocks": blocks, "whole": full_graph(model)})


def blocks_record(plan: Plan, engines: list[str], batch_size: int, seq_len: int, options: dict | None = None) -> dict:
    """What a blocks run stores as its configuration (not a RunConfig's: it is not resumed): the command's options
    and the blocks as `breakdown_of` reads them back."""
    return {"command": "blocks", "options": options or {}, "stopping_rule": plan.rule.to_dict(), "repeat": 1,
            "timeout_s": plan.timeout_s,
            "blocks": {"model": plan.model.name, "engines": engines, "batch_size": batch_size, "seq_len": seq_len,
                       "blocks": block_facts([b for b, _ in plan.context["blocks"]])}}


def cmd_blocks(args) -> int:
    engines = comma_list(args.engine)
    if engines:
        for name in engines:
            if not require_engine(name).cuts_graph:
                raise UsageError(f"{name} does not load ONNX graphs, so it cannot time blocks: choose among "
                                 f"{', '.join(_graph_engines()) or 'none installed (pip install onnxruntime)'}")
    else:
        engines = _graph_engines()
        if not engines:
            raise UsageError("no installed engine loads ONNX graphs: pip install 'enginebench[onnxruntime]'")
    if args.workload not in WORKLOADS:
        raise UsageError(f"unknown workload {args.workload!r}: use one of {', '.join(WORKLOADS)}")
    batch_size = positive_int("--batch-size", args.batch_size)
    seq_len = positive_int("--seq-len", args.seq_len)
    threads = positive_int("--threads", args.threads) if args.threads else len(os.sched_getaffinity(0))
    rule = StoppingRule(duration_s=seconds("--duration", args.duration),
                        min_samples=positive_int("--min-samples", args.min_samples),
                        warmup_s=seconds("--warmup", args.warmup, allow_zero=True))
    timeout = seconds("--timeout", args.timeout)
    options = engine_options(args.option)
    # the blocks' sessions are graphs the scenario loads itself, never wrapped in runs of N rows
    if split := splitting_calls(options):
        raise UsageError(f"-o {split[0]}.micro_batch splits a model's calls into smaller runs; `enginebench blocks` "
                         "times each block on whole batches: drop it here, or time the split with `enginebench run`")
    with ResultStore(args.db):  # a database that cannot be written is said before measuring
        pass
    model, _ = _full_onnx(args.model)
    workload = build_workload(args.workload, model.path, seq_len=seq_len, max_positions=model.max_positions)
    plan = blocks_plan(model, engines, workload, batch_size, rule, threads, timeout, options)
    given = {k: v for k, v in vars(args).items() if k != "command" and not callable(v)}
    record = blocks_record(plan, engines, batch_size, workload.spec.seq_len, given)
    run = execute(plan, db=args.db, record=record)
    result = breakdown_of(run.results, record["blocks"])
    if args.json:
        print(json.dumps(breakdown_dict(result), indent=2))
    else:
        render_breakdown(result)
    return 0 if any(e.error is None for e in result.engines) else 1


def _graph_engines() -> list[str]:
    """Installed engines that load ONNX graphs (an engine module that fails to import is left out)."""
    found = []
    for name in known_engines():
        try:
            cls = engine_class(name)
        except ImportError:
            continue
        if cls.cuts_graph and cls.installed():
            found.append(name)
    return found


COMMANDS = {"nodes": cmd_nodes, "blocks": cmd_blocks}
