"""The commands about this machine and what it has: `enginebench engines`, `models`, `machine`."""

from __future__ import annotations

from enginebench.cli.args import DEFAULT_DB
from enginebench.measure import cpu_features, cpuid_mask, roofline
from enginebench.measure.cpu_features import usable_cpus
from enginebench.measure.host_load import busy_note
from enginebench.measure.peak import cpu_peak, gemm_source
from enginebench.models import KNOWN_MODELS
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    engines = sub.add_parser("engines", help="the engine feature table, probed on this machine")
    engines.add_argument("--json", action="store_true")

    sub.add_parser("models", help="the models enginebench knows by name")
    machine = sub.add_parser("machine", help="measure memory bandwidth and GEMM FLOP/s per precision once (the "
                                             "decode roofline; ops' %% of peak)")
    machine.add_argument("--db", default=DEFAULT_DB, help=f"SQLite database to store them in [{DEFAULT_DB}]")
    machine.add_argument("--json", action="store_true", help="print the measurement as JSON")


def cmd_engines(args) -> int:
    from enginebench.formats.tables.features import probe_engines, render_feature_table, to_json

    infos = probe_engines()
    if args.json:
        print(to_json(infos))
    else:
        render_feature_table(infos)
    return 0


def cmd_machine(args) -> int:
    import json

    with ResultStore(args.db) as store:
        speed = roofline.measure_machine()
        store.add_machine_speed(speed)
    roofline.keep_machine_speed(speed)  # runs with any --db use the newest
    if args.json:
        print(json.dumps(speed, indent=2))
    else:
        print("\n".join(machine_lines(speed, args.db)))
    return 0


def machine_lines(speed: dict, db: str) -> list[str]:
    details = speed["details"]
    triad = details["triad"]
    threads = usable_cpus()
    cpu = cpu_peak()
    lines = [f"memory bandwidth {speed['bandwidth_gbs']:.1f} GB/s (triad, {triad['threads']} threads, best of "
             f"{len(triad['runs_s'])})",
             f"GEMM fp32 {speed['gemm_gflops']:.1f} GFLOP/s ("
             + (gemm_source(details["gemm"]) if "library" in details["gemm"]  # older records: numpy alone
                else f"numpy float32 {details['gemm']['n']}²") + ")"]
    for precision, figure in details.get("gemm_by_precision", {}).items():
        if precision == "fp32" and "library" in details["gemm"]:
            continue  # the line above
        unit = "GOP/s" if precision == "int8" else "GFLOP/s"
        rate = f"{figure['gflops']:.1f} {unit}" if "gflops" in figure else "—"
        lines.append(f"GEMM {precision} {rate} ({gemm_source(figure)})")
    peaks = [f"{p} {cpu.gflops(p, threads):.0f} {'GOP/s' if p == 'int8' else 'GFLOP/s'} ({cpu.instructions[p]})"
             for p in cpu.flops_per_cycle if cpu.gflops(p, threads)]
    if peaks:
        lines.append(f"theoretical, {min(threads, cpu.physical_cores)} cores × {cpu.clock_ghz:.2f} GHz "
                     f"({cpu.clock_source}): " + "; ".join(peaks))
    lines.extend(cpu_features_lines(cpu_features.current()))
    if busy := busy_note(speed):
        lines.append(f"warning: {busy}")
    lines.append(f"stored in {db}")
    return lines


def cpu_features_lines(features) -> list[str]:
    """What ENGINEBENCH_CPU_FEATURES changed, and which libraries it cannot reach; nothing for the whole CPU."""
    if not features.narrowed_to:
        return []
    caps = " ".join(f"{k}={v}" for k, v in features.caps.items())
    lines = [f"CPU features: {features.describe()}",
             f"  decisions (precisions offered, VNNI, bf16, theoretical peak) and kernels capped by {caps}"]
    if features.cpuid_env:
        lines.append(f"  CPUID masked ({cpuid_mask.RULES_ENV}={features.cpuid_env[cpuid_mask.RULES_ENV]}): MLAS, "
                     "OpenVINO's plugin, torch's vector kernels and clang see the smaller CPU"
                     + (f" ({cpuid_mask.answered()} CPUID instructions answered in this process)"
                        if cpuid_mask.active() else ""))
    lines.append("  still on the whole CPU: " + "; ".join(f"{name} ({why})" for name, why in features.uncapped().items()))
    return lines


def cmd_models(args) -> int:
    for name, (_, description) in KNOWN_MODELS.items():
        print(f"{name:20} {description}")
    print("or --model PATH: a local BERT-family folder (config.json, *.safetensors, tokenizer.json),")
    print("  a Llama folder (config.json, *.safetensors, tokenizer.json) or a .gguf file; --llm-config FILE for a synthetic Llama shape")
    return 0


COMMANDS = {"engines": cmd_engines, "models": cmd_models, "machine": cmd_machine}
