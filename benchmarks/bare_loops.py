"""Bare loops: the same library call enginebench times, written the way a user of the library would write it.

Run by benchmarks/harness_overhead.py as a subprocess of its own (one per round), never by enginebench. This
file imports nothing from enginebench in the bare arms: only numpy and the engine's library. The token ids
come in an .npz file that the caller built with enginebench's own workload code, so both sides run the same
inputs in the same order.

    python benchmarks/bare_loops.py ARM --inputs FILE.npz --threads 2 --seconds 5 --warmup 1 --min-samples 10 ...

ARM:
  torch        transformers AutoModel (fp32) under torch.inference_mode, torch.set_num_threads(T); the timed
               call is the model's forward plus mean pooling and L2 normalisation in torch (the function
               enginebench times), and .numpy() of the [batch, hidden] result
  onnxruntime  onnxruntime.InferenceSession on --onnx (the file enginebench exported) with the same
               SessionOptions (intra_op T, inter_op 1, sequential, ORT_ENABLE_ALL), CPU provider
  llamacpp     llama_cpp.Llama on --gguf with n_threads = n_threads_batch = T, the same n_ctx / n_batch and
               flash attention as enginebench's context (its default, AUTO, resolves to on for the CPU); a
               pp sample is Llama.eval(prompt) after Llama.reset(), a tg sample is Llama.eval([token]) of
               one decode step; both read the last position's logits out (a copy, as enginebench's call does)
  session:ENGINE  enginebench's own session and scenario code (SessionFactory + run_latency/run_generate) in
               this plain process: no parent, no child, no queue, no fidelity pass. Splits the harness cost
               into "the process machinery" (enginebench vs session) and "the session wrapper" (session vs bare).

The stopping rule is enginebench's: warm-up of at least --warmup seconds and 2 calls (decoders: whole
generations), then calls until both --seconds and --min-samples are reached; perf_counter_ns around each call.
Prints one JSON object: {"cells": {name: [ns, ...]}, "facts": {...}}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

clock = time.perf_counter_ns


def timed_loop(call, inputs, seconds: float, warmup: float, min_samples: int, min_warmup: int = 2) -> list[int]:
    """enginebench's stopping rule around `call(inputs[i % len(inputs)])`, one clock pair per call."""
    k = len(inputs)
    warm_end = clock() + int(warmup * 1e9)
    n = 0
    while n < min_warmup or clock() < warm_end:
        call(inputs[n % k])
        n += 1
    samples: list[int] = []
    stop_at = clock() + int(seconds * 1e9)
    i = 0
    while True:
        x = inputs[i % k]
        t0 = clock()
        call(x)
        t1 = clock()
        samples.append(t1 - t0)
        i += 1
        if t1 >= stop_at and i >= min_samples:
            return samples


# -- torch --------------------------------------------------------------------------------------------------

def bare_torch(args, data) -> tuple[dict, dict]:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    model = AutoModel.from_pretrained(args.model_path, dtype=torch.float32).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if f"{args.cell}/{n}" in data]
    batches = [{n: torch.from_numpy(data[f"{args.cell}/{n}"][k]) for n in names}
               for k in range(data[f"{args.cell}/input_ids"].shape[0])]

    def call(feeds):
        hidden = model(**feeds).last_hidden_state
        mask = feeds["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    with torch.inference_mode():  # once around the loop, as a user writes it
        samples = timed_loop(call, batches, args.seconds, args.warmup, args.min_samples)
    facts = {"torch": torch.__version__, "threads_used": torch.get_num_threads(),
             "interop_threads_used": torch.get_num_interop_threads(),
             "attention": model.config._attn_implementation, "dtype": str(next(model.parameters()).dtype),
             "inference_mode": "entered once around the loop"}
    return {args.cell: samples}, facts


# -- onnxruntime ----------------------------------------------------------------------------------------------

def bare_onnxruntime(args, data) -> tuple[dict, dict]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batches = [{n: data[f"{args.cell}/{n}"][k] for n in names} for k in range(data[f"{args.cell}/input_ids"].shape[0])]
    samples = timed_loop(lambda feeds: session.run(None, feeds)[0], batches, args.seconds, args.warmup,
                         args.min_samples)
    facts = {"onnxruntime": ort.__version__, "onnx_path": args.onnx, "providers": session.get_providers(),
             "intra_op_num_threads": so.intra_op_num_threads, "inter_op_num_threads": so.inter_op_num_threads}
    return {args.cell: samples}, facts


# -- llama.cpp ------------------------------------------------------------------------------------------------

def bare_llamacpp(args, data) -> tuple[dict, dict]:
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=args.gguf, n_ctx=args.n_ctx, n_batch=args.n_batch, n_ubatch=args.n_batch,
                n_threads=args.threads, n_threads_batch=args.threads, flash_attn=args.flash_attn, verbose=False)
    n_vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:  # the last position's logits, copied out (as enginebench's call returns them)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)).copy()

    cells: dict[str, list[int]] = {}
    ttft: dict[str, list[int]] = {}
    for cell in args.cell.split(","):  # in enginebench's cell order (pp before tg: one process runs both)
        prompts = [row.tolist() for row in data[f"{cell}/prompts"]]  # batch 1: a token list per prompt
        if cell.startswith("pp"):
            def once(prompt):
                llm.reset()
                t0 = clock()
                llm.eval(prompt)
                last_logits()
                return clock() - t0
        else:
            steps = int(data[f"{cell}/gen_len"]) - 1

            def once(prompt):
                llm.reset()
                t0 = clock()
                llm.eval(prompt)
                token = int(last_logits().argmax())
                first = clock() - t0
                out = []
                for _ in range(steps):
                    t0 = clock()
                    llm.eval([token])
                    logits = last_logits()
                    out.append(clock() - t0)
                    token = int(logits.argmax())
                return first, out
        samples, firsts = _generations(once, prompts, args, cell.startswith("pp"))
        cells[cell] = samples
        if firsts:
            ttft[cell] = firsts
    facts = {"llama_cpp_python": llama_cpp.__version__, "gguf_path": args.gguf, "n_ctx": llm.n_ctx(),
             "n_batch": args.n_batch, "n_threads": args.threads, "flash_attn": args.flash_attn,
             "ttft_ns": ttft, "timed": "Llama.eval(tokens) + copy of the last logits (llama_get_logits_ith)"}
    return cells, facts


def _generations(once, prompts, args, is_pp: bool):
    """enginebench's generate loop: warm-up whole generations, then generations until --seconds and
    --min-samples (a tg generation gives gen_len - 1 samples, the stop is checked between generations)."""
    warm_end = clock() + int(args.warmup * 1e9)
    n = 0
    while n < 2 or clock() < warm_end:
        once(prompts[n % len(prompts)])
        n += 1
    samples: list[int] = []
    firsts: list[int] = []
    stop_at = clock() + int(args.seconds * 1e9)
    i = 0
    while True:
        got = once(prompts[i % len(prompts)])
        i += 1
        if is_pp:
            samples.append(got)
        else:
            firsts.append(got[0])
            samples.extend(got[1])
        if clock() >= stop_at and len(samples) >= args.min_samples:
            return samples, firsts


# -- enginebench's session, in this process --------------------------------------------------------------------

def session_arm(args, engine: str) -> tuple[dict, dict]:
    """enginebench's SessionFactory and scenario functions, called directly (what the child does, minus the
    child: no parent process, no queue, no reference or fidelity pass)."""
    from enginebench.execution.child import SessionFactory
    from enginebench.measure.timing import StoppingRule
    from enginebench.models import resolve_model

    model = resolve_model(args.model)
    rule = StoppingRule(duration_s=args.seconds, min_samples=args.min_samples, warmup_s=args.warmup)
    session = SessionFactory(engine, model, args.precision, args.threads, {})()
    cells = {}
    if model.kind == "decoder":
        from enginebench.scenarios.generate import run_generate
        from enginebench.workloads.prompts import build_prompt_sets, decoder_tests

        tests, _ = decoder_tests([args.prompt_len], [args.gen_len], model.max_positions)
        sets = build_prompt_sets(model.path, tests, seed=0, max_positions=model.max_positions)
        for cell in args.cell.split(","):
            m = run_generate(session, sets[cell], args.batch_size, rule, 0.0)
            cells[cell] = np.concatenate(m.worker_samples).tolist()
    else:
        from enginebench.scenarios.latency import run_latency
        from enginebench.workloads import build_workload

        workload = build_workload(args.cell, model.path, seq_len=args.seq_len, seed=0,
                                  max_positions=model.max_positions)
        m = run_latency(session, workload, args.batch_size, rule, 0.0)
        cells[args.cell] = np.concatenate(m.worker_samples).tolist()
    details = {k: v for k, v in session.details.items() if isinstance(v, (int, float, str, bool))}
    return cells, {"session": type(session).__name__, **details}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arm", help="torch | onnxruntime | llamacpp | session:ENGINE")
    p.add_argument("--inputs", help=".npz of token ids built by enginebench's workload code (bare arms)")
    p.add_argument("--cell", required=True, help="workload name (encoders) or comma list of tests (pp128,tg128)")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--min-samples", type=int, default=10)
    p.add_argument("--model-path", help="torch: the Hugging Face folder")
    p.add_argument("--onnx", help="onnxruntime: the ONNX file")
    p.add_argument("--gguf", help="llamacpp: the GGUF file")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--flash-attn", type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=True)
    # session arm: what enginebench needs to build the same cell itself
    p.add_argument("--model", help="session arm: enginebench model name")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen-len", type=int, default=128)
    args = p.parse_args()

    started = time.perf_counter()
    if args.arm.startswith("session:"):
        cells, facts = session_arm(args, args.arm.split(":", 1)[1])
    else:
        data = dict(np.load(args.inputs))
        arms = {"torch": bare_torch, "onnxruntime": bare_onnxruntime, "llamacpp": bare_llamacpp}
        if args.arm not in arms:
            sys.exit(f"unknown arm {args.arm!r}: use {', '.join(arms)} or session:ENGINE")
        cells, facts = arms[args.arm](args, data)
    facts["env"] = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    facts["wall_s"] = round(time.perf_counter() - started, 3)
    sys.stdout.write(json.dumps({"cells": cells, "facts": facts}) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (some engines' destructors abort at exit)


if __name__ == "__main__":
    main()
