"""The commands about this machine and what it has: `enginebench engines`, `models`, `machine`."""

from __future__ import annotations

from enginebench.cli.args import DEFAULT_DB


def add_parsers(sub) -> None:
    engines = sub.add_parser("engines", help="the engine feature table, probed on this machine")
    engines.add_argument("--json", action="store_true")

    sub.add_parser("models", help="the models enginebench knows by name")
    machine = sub.add_parser("machine", help="measure memory bandwidth and GEMM FLOP/s once (the decode roofline)")
    machine.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database to store them in [{DEFAULT_DB}]")
    machine.add_argument("--json", action="store_true", help="print the measurement as JSON")


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


COMMANDS = {"engines": cmd_engines, "models": cmd_models, "machine": cmd_machine}
