"""Repeatability: the same cell measured twice in one run, in two independent processes, and how far apart
their medians land. Prints, per engine, each process's median with its CI and the ratio of the two.

    .venv/bin/python benchmarks/repeatability.py [--engines onnxruntime,torch] [--seconds 5] [--repeat 2]

A ratio within the processes' CIs says one process's figure is as good as any; a ratio outside them is the
between-process variation the t interval over processes of `enginebench run --repeat N` exists to cover.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from enginebench.measure.stats import bootstrap_ci


def run_cells(engines: list[str], seconds: float, repeat: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "enginebench", "run", "--model", "minilm", "--engine", ",".join(engines),
               "--workload", "corpus", "--scenario", "latency", "--batch-size", str(batch), "--duration",
               str(seconds), "--repeat", str(repeat), "--json", "--db", str(Path(tmp) / "r.db")]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"enginebench run failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="onnxruntime,torch")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per process [5]")
    parser.add_argument("--repeat", type=int, default=2, help="processes per cell [2]")
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args()
    run = run_cells(args.engines.split(","), args.seconds, args.repeat, args.batch_size)
    print(f"MiniLM, corpus, batch {args.batch_size}, latency, {args.repeat} processes per cell of "
          f"{args.seconds:g} s, run {run['run_id']} ({run['machine']['cpu']})")
    for r in run["results"]:
        if r["status"] != "ok":
            print(f"{r['engine']:12} {r['status']}: {r['error']}")
            continue
        medians = []
        parts = []
        for rep in r["repetitions"]:
            ms = np.concatenate([np.asarray(w, dtype=np.float64) for w in rep["worker_samples"]]) / 1e6
            lo, hi = bootstrap_ci(ms)
            medians.append(float(np.median(ms)))
            parts.append(f"{medians[-1]:.3f} ms [{lo:.3f}, {hi:.3f}] (n={ms.size})")
        ratio = max(medians) / min(medians)
        ci = r["latency_ms"]["ci95"]
        print(f"{r['engine']:12} " + "  vs  ".join(parts) + f"  ratio {ratio:.3f}")
        print(f"{'':12} pooled median {r['latency_ms']['median']:.3f} ms, CI over processes "
              f"[{ci[0]:.3f}, {ci[1]:.3f}]; verdict: {'ok' if r['verdict']['ok'] else '; '.join(r['verdict']['reasons'])}")


if __name__ == "__main__":
    main()
