"""How much does the harness add to what it measures, end to end, on real engines?

For each engine, rounds alternate the order of the arms (A B, then B A, ...):
  A  enginebench: `enginebench run --json` itself, as a subprocess, on one cell (parent process, spawned child,
     reference and fidelity pass, the engine's Session wrapper, the scenario's timed loop: everything);
  B  bare: benchmarks/bare_loops.py in a subprocess of its own: the same library call on the same model file,
     the same token ids (built here with enginebench's own workload code), the same thread count and the same
     warm-up and stopping rule, written the way a user of the library would write it, perf_counter_ns around
     each call.
  (C with --split: benchmarks/bare_loops.py session:ENGINE, enginebench's Session and scenario code called in
     a plain process: separates what the process machinery adds (A vs C) from what the wrapper adds (C vs B).)
Every round compares medians (median of A's samples / median of B's samples); per engine the script prints
each round and the geometric mean of the ratios over rounds with a 95% t interval over rounds (rounds − 1 df).

Cells (defaults): torch and onnxruntime on MiniLM fp32, corpus workload, 128 tokens, latency scenario, batch 1;
llamacpp on SmolLM2-135M's shipped GGUF (precision native, Q4_1), generate scenario, pp128 (a prefill of 128
tokens) and tg128 (decode steps after a 128-token prompt: one sample per step), batch 1. enginebench cannot run
a tg test without its pp test, so both are compared.

    .venv/bin/python benchmarks/harness_overhead.py [--rounds 5] [--seconds 5] [--engines torch,onnxruntime,llamacpp]
        [--threads 2] [--warmup 1] [--split] [--json-out FILE]

Each enginebench round also pays for what happens outside its timed region (the torch fp32 reference in its own
child, the fidelity pass; for llamacpp the decoder reference takes minutes on a small machine): only the timed
samples are compared. Run it on a quiet machine; figures from a busy one are not worth keeping.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from enginebench.measure.stats import over_processes

HERE = Path(__file__).resolve().parent
BARE = HERE / "bare_loops.py"

# engine -> the cell it is measured on
ENGINES = {
    "torch": {"model": "minilm", "precision": "fp32", "kind": "encoder"},
    "onnxruntime": {"model": "minilm", "precision": "fp32", "kind": "encoder"},
    "llamacpp": {"model": "smollm2-135m", "precision": "native", "kind": "decoder"},
}


# the facts each arm reports that bear on the comparison (threads, attention, files, environment)
SHOWN_FACTS = ("executed_precision", "threads_used", "interop_threads_used", "intra_op_num_threads",
               "inter_op_num_threads", "attention", "inference_mode", "onnx_path", "providers", "gguf_path", "n_ctx",
               "n_batch", "n_threads", "flash_attn", "host_side_ms", "engine_options", "env", "session")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- enginebench's command line, as it is today -------------------------------------------------------------

def enginebench_command() -> list[str]:
    script = Path(sys.executable).parent / "enginebench"
    return [str(script)] if script.exists() else [sys.executable, "-m", "enginebench"]


# -- inputs: enginebench's own workload code ----------------------------------------------------------------

def build_inputs(engine: str, args, out: Path) -> dict:
    """Write the token ids enginebench will time for this engine's cell into `out` (.npz); return what the
    bare loop needs to know about the cell (model files, cell names)."""
    from enginebench.models import resolve_model

    spec = ENGINES[engine]
    model = resolve_model(spec["model"])
    arrays: dict[str, np.ndarray] = {}
    info: dict = {"model": spec["model"], "precision": spec["precision"], "model_path": str(model.path)}
    if spec["kind"] == "encoder":
        from enginebench.workloads import build_workload

        workload = build_workload(args.workload, model.path, seq_len=args.seq_len, seed=0,
                                  max_positions=model.max_positions)
        batches = workload.batches(args.batch_size)  # what run_latency cycles through, in its order
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            arrays[f"{args.workload}/{name}"] = np.stack([getattr(b, name) for b in batches])
        info["cells"] = [args.workload]
        info["describe"] = (f"{spec['model']} {spec['precision']}, {args.workload} {workload.spec.seq_len} tokens, "
                            f"latency, batch {args.batch_size}, {args.threads} threads, {len(batches)} distinct batches")
        if engine == "onnxruntime":
            from enginebench.models.onnx_export import onnx_encoder

            path, _ = onnx_encoder(model)  # the cached export enginebench loads (made here if missing)
            info["onnx"] = str(path)
    else:
        from enginebench.workloads.prompts import build_prompt_sets, decoder_tests

        if args.batch_size != 1:
            raise SystemExit("llamacpp: the bare loop (llama_cpp.Llama) runs one sequence: use --batch-size 1")
        tests, dropped = decoder_tests([args.prompt_len], [args.gen_len], model.max_positions)
        if dropped:
            log(f"llamacpp: {'; '.join(dropped)}")
        sets = build_prompt_sets(model.path, tests, seed=0, max_positions=model.max_positions)
        for name, prompts in sets.items():  # batch 1: run_generate's inputs are its prompts one by one
            rows = [prompts.batch(i, 1)[0] for i in range(len(prompts.prompts))]
            arrays[f"{name}/prompts"] = np.stack(rows)
            arrays[f"{name}/gen_len"] = np.asarray(prompts.test.gen_len)
        info["cells"] = list(sets)
        if spec["precision"] == "native":
            info["gguf"] = str(model.gguf_path)
        else:
            from enginebench.engines.llamacpp import gguf_file

            info["gguf"] = str(gguf_file(model, spec["precision"], args.threads)[0])
        info["describe"] = (f"{spec['model']} {spec['precision']} ({Path(info['gguf']).name}), generate "
                            f"{', '.join(info['cells'])}, batch 1, {args.threads} threads")
    np.savez(out, **arrays)
    info["inputs"] = str(out)
    return info


# -- the arms -------------------------------------------------------------------------------------------------

def run_enginebench(engine: str, info: dict, args, db: Path) -> tuple[dict, dict]:
    spec = ENGINES[engine]
    cmd = [*enginebench_command(), "run", "--engine", engine, "--model", spec["model"],
           "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--precision", spec["precision"],
           "--duration", f"{args.seconds:g}s", "--warmup", f"{args.warmup:g}s", "--min-samples", str(args.min_samples),
           "--repeat", "1", "--db", str(db), "--json"]
    if spec["kind"] == "encoder":
        cmd += ["--workload", args.workload, "--scenario", "latency", "--seq-len", str(args.seq_len)]
    else:
        cmd += ["--scenario", "generate", "--prompt-len", str(args.prompt_len), "--gen-len", str(args.gen_len)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    try:
        run = json.loads(done.stdout)
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"enginebench run exited {done.returncode}: {tail}") from None
    cells, facts = {}, {}
    for r in run["results"]:
        if r["status"] != "ok":
            raise RuntimeError(f"enginebench {r['workload']}: {r['status']}: {r['error']}")
        cells[r["workload"]] = r["samples"]
        d = r.get("details", {})
        facts.update({"executed_precision": r.get("executed_precision"), "engine_options": r.get("engine_options"),
                      **{k: d[k] for k in ("threads_used", "interop_threads_used", "attention", "onnx_path",
                                           "providers", "gguf_path", "n_ctx", "n_batch") if k in d}})
        if "host_side" in d:
            facts.setdefault("host_side_ms", {})[r["workload"]] = d["host_side"].get("median_ms")
    return cells, facts


def run_bare(arm: str, engine: str, info: dict, args) -> tuple[dict, dict]:
    cmd = [sys.executable, str(BARE), arm, "--cell", ",".join(info["cells"]), "--threads", str(args.threads),
           "--seconds", str(args.seconds), "--warmup", str(args.warmup), "--min-samples", str(args.min_samples)]
    if arm.startswith("session:"):
        spec = ENGINES[engine]
        cmd += ["--model", spec["model"], "--precision", spec["precision"], "--batch-size", str(args.batch_size),
                "--seq-len", str(args.seq_len), "--prompt-len", str(args.prompt_len), "--gen-len", str(args.gen_len)]
    else:
        cmd += ["--inputs", info["inputs"], "--model-path", info["model_path"]]
        if "onnx" in info:
            cmd += ["--onnx", info["onnx"]]
        if "gguf" in info:
            cmd += ["--gguf", info["gguf"], "--n-ctx", str(args.n_ctx), "--n-batch", str(args.n_batch)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    if done.returncode != 0 or not done.stdout.strip():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{arm} loop exited {done.returncode}: {tail}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return got["cells"], got["facts"]


# -- statistics -----------------------------------------------------------------------------------------------

def median_ci(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """The per-round ratios' geometric mean and its 95% CI: Student's t over their logs with rounds − 1 degrees of
    freedom (`enginebench.measure.stats.over_processes`), the interval enginebench states for a cell's processes.
    (A bootstrap over 3-5 rounds is close to [lowest, highest] and covers far less than 95%.) `seed` is unused."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 1:
        return float(v[0]), float(v[0]), float(v[0])
    point, lo, hi = over_processes(v)
    return float(point), float(lo), float(hi)


def ms(ns_samples) -> float:
    return float(np.median(np.asarray(ns_samples, dtype=np.float64))) / 1e6


# -- main -----------------------------------------------------------------------------------------------------

def measure_engine(engine: str, args, tmp: Path) -> dict:
    info = build_inputs(engine, args, tmp / f"{engine}.npz")
    log(f"{engine}: {info['describe']}")
    arms = ["enginebench", "bare"] + (["session"] if args.split else [])
    rounds: list[dict] = []
    facts: dict[str, dict] = {}
    for k in range(args.rounds):
        row: dict = {}
        for arm in (arms if k % 2 == 0 else arms[::-1]):  # A B (C), then C B A: linear drift cancels
            started = time.perf_counter()
            try:
                if arm == "enginebench":
                    cells, f = run_enginebench(engine, info, args, tmp / f"{engine}-{k}.db")
                else:
                    cells, f = run_bare(engine if arm == "bare" else f"session:{engine}", engine, info, args)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                log(f"{engine} round {k + 1} {arm}: {e}")
                row[arm] = None
                continue
            facts.setdefault(arm, f)
            row[arm] = {cell: cells[cell] for cell in info["cells"] if cell in cells}
            log(f"{engine} round {k + 1} {arm}: " + ", ".join(f"{c} {ms(s):.3f} ms (n={len(s)})"
                for c, s in row[arm].items()) + f"  [{time.perf_counter() - started:.0f} s]")
        rounds.append(row)
    return {"info": info, "rounds": rounds, "facts": facts}


def report(engine: str, got: dict, args) -> list[str]:
    lines = [f"{engine}: {got['info']['describe']}"]
    for arm in ("enginebench", "bare", "session"):
        facts = got["facts"].get(arm)
        if facts:
            shown = {k: v for k, v in facts.items() if k in SHOWN_FACTS and v is not None}
            lines.append(f"  {arm + ':':12} {json.dumps(shown, default=str)}")
    eb = got["facts"].get("enginebench", {})
    for key, mine in (("onnx_path", got["info"].get("onnx")), ("gguf_path", got["info"].get("gguf"))):
        if mine and eb.get(key) and Path(eb[key]) != Path(mine):
            lines.append(f"  WARNING: enginebench ran {eb[key]}, the bare loop {mine}: not the same file")
    summary = []
    for cell in got["info"]["cells"]:
        label = engine if len(got["info"]["cells"]) == 1 else f"{engine} {cell}"
        ratios, eb_ms, bare_ms, ses_ratios, ses_ms = [], [], [], [], []
        for k, row in enumerate(got["rounds"]):
            a, b, c = (row.get(arm) or {} for arm in ("enginebench", "bare", "session"))
            if cell not in a or cell not in b:
                lines.append(f"  {label:16} round {k + 1}: missing ({'enginebench' if cell not in a else 'bare'} failed)")
                continue
            ma, mb = ms(a[cell]), ms(b[cell])
            ratios.append(ma / mb)
            eb_ms.append(ma)
            bare_ms.append(mb)
            text = (f"  {label:16} round {k + 1}  enginebench {ma:8.3f} ms (n={len(a[cell])})  bare {mb:8.3f} ms "
                    f"(n={len(b[cell])})  ratio {ma / mb:.3f}")
            if cell in c:
                mc = ms(c[cell])
                ses_ms.append(mc)
                ses_ratios.append((ma / mc, mc / mb))
                text += f"  | session {mc:8.3f} ms: enginebench/session {ma / mc:.3f}, session/bare {mc / mb:.3f}"
            lines.append(text)
        if not ratios:
            summary.append(f"{label:16} no complete round")
            continue
        r, lo, hi = median_ci(ratios)
        text = (f"{label:16} enginebench {np.median(eb_ms):.3f} ms  bare {np.median(bare_ms):.3f} ms  "
                f"ratio {r:.3f} [{lo:.3f}, {hi:.3f}] over {len(ratios)} rounds")
        if ses_ratios:
            r1, lo1, hi1 = median_ci([x for x, _ in ses_ratios])
            r2, lo2, hi2 = median_ci([y for _, y in ses_ratios])
            text += (f"\n{'':16} split: enginebench/session {r1:.3f} [{lo1:.3f}, {hi1:.3f}] (process machinery), "
                     f"session/bare {r2:.3f} [{lo2:.3f}, {hi2:.3f}] (session wrapper + scenario loop)")
        summary.append(text)
    return lines + summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5, help="A/B rounds per engine [5]")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell, each arm [5]")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)} [all]")
    p.add_argument("--threads", type=int, default=2, help="threads per session [2]")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per cell, each arm [1]")
    p.add_argument("--min-samples", type=int, default=10, help="calls per cell, at least [10]")
    p.add_argument("--batch-size", type=int, default=1, help="batch size [1]")
    p.add_argument("--workload", default="corpus", help="encoders: corpus or titles [corpus]")
    p.add_argument("--seq-len", type=int, default=128, help="encoders: corpus tokens per input [128]")
    p.add_argument("--prompt-len", type=int, default=128, help="llamacpp: prompt tokens (pp test, tg context) [128]")
    p.add_argument("--gen-len", type=int, default=128, help="llamacpp: tokens generated (tg test) [128]")
    p.add_argument("--n-ctx", type=int, default=2048, help="llamacpp bare loop: context, as enginebench's [2048]")
    p.add_argument("--n-batch", type=int, default=512, help="llamacpp bare loop: n_batch = n_ubatch [512]")
    p.add_argument("--split", action="store_true", help="add arm C: enginebench's session code in a plain process")
    p.add_argument("--timeout", type=float, default=3600, help="seconds any one subprocess may take [3600]")
    p.add_argument("--json-out", help="write every round's samples and facts to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (databases, inputs)")
    args = p.parse_args()

    from enginebench.engines import engine_class

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for e in engines:
        if e not in ENGINES:
            raise SystemExit(f"unknown engine {e!r}: use {', '.join(ENGINES)}")
    tmp = Path(tempfile.mkdtemp(prefix="harness-overhead-"))
    results, lines = {}, []
    try:
        for engine in engines:
            if not engine_class(engine).installed():
                lines.append(f"{engine}: not installed ({engine_class(engine).install_hint()}), skipped")
                continue
            results[engine] = measure_engine(engine, args, tmp)
            lines += report(engine, results[engine], args)
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.rounds} rounds per engine, alternating enginebench / bare{' / session' if args.split else ''}; "
          f"{args.seconds:g} s cells after {args.warmup:g} s warm-up; {args.threads} threads; "
          f"ratio = median of enginebench's samples / median of the bare loop's, CI: t over rounds")
    print("\n".join(lines))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"args": vars(args), "results": results}, default=str))


if __name__ == "__main__":
    main()
