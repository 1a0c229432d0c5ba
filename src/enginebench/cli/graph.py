"""The graph commands: `enginebench nodes` (the exported graph's nodes, to pick a cut point), `run --until NODE`
(a partial model), and `enginebench blocks` (time per block: embeddings, each layer, pooling)."""

from __future__ import annotations

import os

from enginebench.config import comma_list, engine_options, positive_int, seconds
from enginebench.engines import engine_class, known_engines, require_engine
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.models import resolve_model
from enginebench.workloads import WORKLOADS, build_workload


def add_parsers(sub) -> None:
    nodes = sub.add_parser("nodes", help="the exported ONNX graph's nodes and outputs (cut points for run --until)")
    nodes.add_argument("--model", default="minilm", help="registry name or a local model folder [minilm]")
    nodes.add_argument("--grep", help="only nodes whose name, op type or output contains this text")
    nodes.add_argument("--json", action="store_true")

    blocks = sub.add_parser("blocks", help="time each block of the encoder (embeddings, each layer, pooling) per engine")
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
    blocks.add_argument("--timeout", default="30m", help="time an engine's process may take for its loads and "
                        "timings before it is ended [30m]")
    blocks.add_argument("--option", "-o", action="append", default=[], metavar="ENGINE.KEY=VALUE")
    blocks.add_argument("--json", action="store_true", help="print the breakdown as JSON")


def _full_onnx(model_name: str):
    from enginebench.models.onnx_export import onnx_encoder

    require_engine("onnxruntime")  # the export needs torch + onnx: say how to install them if missing
    model = resolve_model(model_name)
    path, _ = onnx_encoder(model)
    return model, path


def cmd_nodes(args) -> int:
    from enginebench.formats.tables.graph import format_nodes, nodes_json
    from enginebench.models.onnx_graph import list_nodes

    _, path = _full_onnx(args.model)
    nodes = list(enumerate(list_nodes(path)))
    if args.grep:
        text = args.grep.lower()
        nodes = [(i, n) for i, n in nodes if text in f"{n.name} {n.op_type} {' '.join(n.outputs)}".lower()]
    print(nodes_json(nodes) if args.json else format_nodes(nodes))
    return 0


def cmd_blocks(args) -> int:
    from enginebench.breakdown import breakdown
    from enginebench.formats.tables.graph import breakdown_dict, render_breakdown

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
    model, _ = _full_onnx(args.model)
    workload = build_workload(args.workload, model.path, seq_len=seq_len, max_positions=model.max_positions)
    result = breakdown(model, engines, workload.batches(batch_size), rule, threads, options, timeout_s=timeout)
    if args.json:
        import json

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
