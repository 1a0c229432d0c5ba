"""A well-known peer client beside enginebench's on the same server and load: guidellm (the vLLM project's
benchmark client; `make servers` puts it in a virtual environment of its own, .venv-servers/guidellm), and
enginebench's own `run --endpoint ... --scenario latency`, in interleaved blocks, each block one client sending
the same inputs one at a time (guidellm's synchronous profile; enginebench's closed loop of one client).

Each block gives per-request figures as its client computes them:
  generation (completions, streamed, greedy, the same max_tokens)
    guidellm    TTFT = first streamed line with text - the start of writing the request; its "ITL" is
                (last token - first token) / (output tokens - 1), one mean per request (guidellm 0.8
                schemas/base/request_stats.py), output tokens being the server's usage or else the chunks
                with text (llama-cpp-python's server streams no usage)
    enginebench TTFT = first chunk with text - sent (scenarios/requests.py); TPOT = (done - first) / (output
                tokens - 1): the same per-request mean interval, which enginebench calls TPOT (its ITL is each
                single gap between two chunks, a different statistic, kept beside as gaps_ms)
  embeddings (one text per request): end to end, request start to the whole answer read, for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from helpers.servers import INFINITY_ENV, infinity_command, llamacpp_command

from enginebench.scenarios.requests import per_request

ROOT = Path(__file__).resolve().parents[2]
GUIDELLM = Path(os.environ.get("ENGINEBENCH_GUIDELLM", ROOT / ".venv-servers" / "guidellm" / "bin" / "guidellm"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
PATHS = {"completions": "/v1/completions", "embeddings": "/v1/embeddings"}


@dataclass(frozen=True)
class Load:
    """What both clients send: `requests` inputs one at a time. completions: prompts of `prompt_len` corpus
    tokens to SmolLM2 served as "smollm2", `gen_len` tokens each; embeddings: one text of MiniLM's `workload`
    (corpus: 128 tokens) a request, to a server serving it as "minilm"."""

    api: str = "completions"
    prompt_len: int = 64
    gen_len: int = 16
    requests: int = 12
    workload: str = "corpus"

    @property
    def model(self) -> str:
        return "smollm2-135m" if self.api == "completions" else "minilm"

    @property
    def served(self) -> str:
        return "smollm2" if self.api == "completions" else "minilm"


def server_command(load: Load, port: int) -> tuple[list[str], dict]:
    """The command and environment of the server `load` is sent to, computing on one thread so that the other
    core is the client's: on two cores, llama.cpp's two spinning threads and a client's reads fight for the CPU,
    and the fight, not the measurement, sets the figures. completions: llama-cpp-python's server on the SmolLM2
    GGUF; embeddings: Infinity on MiniLM."""
    from enginebench.models import resolve_model
    from enginebench.models.decoder_folder import smollm2_gguf

    if load.api == "completions":
        return llamacpp_command(str(smollm2_gguf()), port, "--n_threads", "1"), {}
    return infinity_command(resolve_model("minilm").path, port), {**INFINITY_ENV, "OMP_NUM_THREADS": "1"}


@lru_cache(maxsize=None)  # the same texts for every block and the warm-up: built once
def inputs(load: Load) -> tuple[list[str], str]:
    """The texts enginebench's endpoint session sends for `load` (the workload's token rows decoded with the
    model's tokenizer, as engines/endpoint.py does), and the model folder holding that tokenizer."""
    from enginebench.models import resolve_model
    from enginebench.workloads import build_workload
    from enginebench.workloads.corpus import DEFAULT_CORPUS
    from enginebench.workloads.prompts import PROMPT_COUNT, corpus_token_rows
    from enginebench.workloads.tokenize import load_tokenizer

    model = resolve_model(load.model)
    tokenizer = load_tokenizer(model.path)
    if load.api == "completions":
        rows = corpus_token_rows(model.path, PROMPT_COUNT, load.prompt_len, 0, DEFAULT_CORPUS)
    else:
        pool = build_workload(load.workload, model.path).pool
        rows = [ids[mask > 0] for ids, mask in zip(pool.input_ids, pool.attention_mask)]
    return [tokenizer.decode([int(i) for i in row], skip_special_tokens=True) for row in rows], str(model.path)


def guidellm_block(url: str, load: Load, work: Path, tag: str) -> list[dict]:
    """One guidellm run: `load.requests` requests one at a time over the inputs in enginebench's order;
    per-request {"e2e_ms"} and, for generation, {"ttft_ms", "itl_ms", "output_tokens"}, from its JSON report."""
    texts, tokenizer = inputs(load)
    data = work / "inputs.jsonl"
    data.write_text("".join(json.dumps({"prompt": texts[i % len(texts)]}) + "\n" for i in range(load.requests)))
    out = work / f"guidellm-{tag}.json"
    backend = (f"kind=openai_http,target={url},model={load.served},request_format={PATHS[load.api]},"
               "api_routes./health=v1/models")
    if load.api == "completions":
        backend += f",extras.body.temperature=0,extras.body.max_tokens={load.gen_len}"
    done = subprocess.run([str(GUIDELLM), "run", "--backend", backend, "--profile", "kind=synchronous",
                           "--constraint", f"kind=max_requests,count={load.requests}",
                           "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
                           "--data", f"kind=json_file,path={data}", "--output", f"kind=json,path={out}",
                           "--disable-console"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **OFFLINE}, cwd=work)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"guidellm failed (exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}")
    bench = json.loads(out.read_text())["benchmarks"][0]
    errored = bench["requests"].get("errored") or []
    if errored:
        raise RuntimeError(f"guidellm: {len(errored)} requests failed: {str(errored[0])[:300]}")
    rows = []
    for r in bench["requests"]["successful"]:
        row = {"e2e_ms": 1000 * r["request_latency"]}
        if load.api == "completions":
            row.update(ttft_ms=r["time_to_first_token_ms"], itl_ms=r["inter_token_latency_ms"],
                       output_tokens=r["output_tokens"])
        rows.append(row)
    return rows


def enginebench_block(url: str, load: Load, db: Path) -> list[dict]:
    """One `enginebench run --endpoint` latency cell measuring at least `load.requests` requests; per measured
    request {"e2e_ms"} and, for generation, {"ttft_ms", "itl_ms" (its TPOT: the per-request mean interval),
    "gaps_ms", "output_tokens"}, from the stored records, with the figures it published for the cell."""
    shape = (["--prompt-len", str(load.prompt_len), "--gen-len", str(load.gen_len)] if load.api == "completions"
             else ["--workload", load.workload, "--batch-size", "1"])
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", url, "--api", load.api,
                           "--model", load.model, "--served-model", load.served, "--scenario", "latency", *shape,
                           "--duration", "0.1s", "--warmup", "0s", "--min-samples", str(load.requests),
                           "--repeat", "1", "--db", str(db), "--json"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"enginebench run failed (exit {done.returncode}): {done.stderr[-2000:]}")
    (result,) = json.loads(done.stdout)["results"]
    figures = result["figures"]["requests"]
    published = {f"published_{name}_p50": figures[name]["p50"]["value"]
                 for name in ("e2e_ms", "ttft_ms", "tpot_ms") if name in figures}
    rows = []
    for r in result["repetitions"][0]["requests"]:
        if r["phase"] != "measured" or r["failure"]:
            continue
        own = per_request(r)  # the figures enginebench derives from the record
        row = {"e2e_ms": own["e2e_ms"], **published}
        if load.api == "completions":
            row.update(ttft_ms=own["ttft_ms"], itl_ms=own["tpot_ms"], gaps_ms=own["itl_ms"],
                       output_tokens=r["output_tokens"])
        rows.append(row)
    return rows


def warm(url: str, load: Load, requests: int = 4) -> None:
    """A few requests before the first block: a server's first requests after its start run slower (seen: the
    first block's TTFT 40% above every later one's), which would fall on whichever client goes first."""
    from enginebench.endpoint.client import Connection, Target

    texts, _ = inputs(load)
    conn = Connection(Target(url, load.api, load.served))
    try:
        for i in range(requests):
            item = texts[i % len(texts)]
            if load.api == "completions":
                conn.send(item, load.gen_len)
            else:
                conn.send([item])
    finally:
        conn.close()


def interleaved(url: str, load: Load, work: Path, rounds: int) -> dict[str, list[list[dict]]]:
    """`rounds` rounds of one block per client, the order alternating (AB BA AB ...), so a drift of the machine
    falls on both alike; {"enginebench": [block, ...], "guidellm": [block, ...]}."""
    warm(url, load)
    blocks: dict[str, list[list[dict]]] = {"enginebench": [], "guidellm": []}
    for k in range(rounds):
        order = ("enginebench", "guidellm") if k % 2 == 0 else ("guidellm", "enginebench")
        for client in order:
            if client == "guidellm":
                blocks[client].append(guidellm_block(url, load, work, str(k)))
            else:
                blocks[client].append(enginebench_block(url, load, work / "eb.db"))
    return blocks


def medians(blocks: list[list[dict]]) -> dict[str, float]:
    """The median of each per-request figure over every request of a client's blocks."""
    every = [r for block in blocks for r in block]
    names = [n for n in ("ttft_ms", "itl_ms", "e2e_ms") if n in every[0]]
    return {name: float(np.median([r[name] for r in every])) for name in names}


__all__ = ["GUIDELLM", "Load", "server_command", "inputs", "guidellm_block", "enginebench_block", "warm",
           "interleaved", "medians"]
