"""Do enginebench's endpoint figures agree with a well-known peer client's on the same server and load?

Starts the server on loopback as the tests do, on one thread (the other core is the client's): --api completions,
llama-cpp-python's server on the SmolLM2 GGUF; --api embeddings, Infinity on MiniLM (`make servers`). Then --rounds
rounds of one block per client, the order alternating: `enginebench run --endpoint ... --scenario latency` and
guidellm (the vLLM project's client, `make servers`) in its synchronous profile, each sending the same --requests
inputs one at a time (prompts of --prompt-len tokens for --gen-len tokens, greedy; or one 128-token corpus text for
MiniLM). tests/helpers/peer.py says how each client defines its figures. Prints each round's medians and, over all
rounds, each client's median TTFT, median per-request token interval (guidellm calls it ITL, enginebench TPOT) and
median end to end, with enginebench's / guidellm's ratio and a bootstrap 95% interval of that ratio (requests
resampled within each client).

    .venv/bin/python benchmarks/peer_agreement.py [--api completions|embeddings] [--rounds 4] [--requests 16]
        [--prompt-len 64] [--gen-len 16] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.peer import Load, interleaved, medians, server_command  # noqa: E402
from helpers.servers import free_port, serving  # noqa: E402

FIGURES = (("ttft_ms", "TTFT p50 (ms)"), ("itl_ms", "token interval p50 (ms)"), ("e2e_ms", "e2e p50 (ms)"))


def ratio_interval(ours: list[float], peer: list[float], draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    a, b = np.asarray(ours), np.asarray(peer)
    ratios = [np.median(rng.choice(a, a.size)) / np.median(rng.choice(b, b.size)) for _ in range(draws)]
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=("completions", "embeddings"), default="completions")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--gen-len", type=int, default=16)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    load = Load(args.api, args.prompt_len, args.gen_len, args.requests)
    port = free_port()
    command, env = server_command(load, port)
    what = (f"llama-cpp-python's server (--n_threads 1), SmolLM2-135M Q4_1, prompts of {load.prompt_len} tokens, "
            f"{load.gen_len} generated" if args.api == "completions"
            else "Infinity (OMP_NUM_THREADS=1), MiniLM, one 128-token corpus text a request")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with serving(command, port, log=work / "server.log", env=env) as url:
            blocks = interleaved(url, load, work, args.rounds)
    print(f"{what}, one request at a time, {load.requests} per block, {args.rounds} rounds interleaved")
    figures = [(name, label) for name, label in FIGURES if name in blocks["guidellm"][0][0]]
    print(f"{'round':<6}{'client':<13}" + "".join(f"{label:>26}" for _, label in figures))
    for k in range(args.rounds):
        for client in ("enginebench", "guidellm"):
            m = medians([blocks[client][k]])
            print(f"{k + 1:<6}{client:<13}" + "".join(f"{m[name]:>26.2f}" for name, _ in figures))
    ours, peer = medians(blocks["enginebench"]), medians(blocks["guidellm"])
    summary = {}
    print(f"\n{'all rounds':<19}{'enginebench':>14}{'guidellm':>12}{'ratio':>9}  95% interval of the ratio")
    for name, label in figures:
        lo, hi = ratio_interval([r[name] for b in blocks["enginebench"] for r in b],
                                [r[name] for b in blocks["guidellm"] for r in b])
        ratio = ours[name] / peer[name]
        summary[name] = {"enginebench": ours[name], "guidellm": peer[name], "ratio": ratio, "ci95": [lo, hi]}
        print(f"{label:<19}{ours[name]:>14.2f}{peer[name]:>12.2f}{ratio:>9.3f}  {lo:.3f}-{hi:.3f}")
    if load.api == "completions":  # enginebench's own ITL: every single gap, a different statistic
        gaps = [g for b in blocks["enginebench"] for r in b for g in r["gaps_ms"]]
        print(f"(enginebench's ITL p50, the median of every single gap between two chunks: {np.median(gaps):.2f} ms)")
    if args.json_out:
        record = {"load": {**vars(load), "model": load.model}, "rounds": args.rounds, "summary": summary,
                  "blocks": blocks}
        args.json_out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
