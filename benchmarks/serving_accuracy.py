"""How close do the serving scenarios land to what queueing theory says, on this machine?

On a synthetic engine whose calls sleep a known time (tests/helpers/fake_engines.py), under MLPerf LoadGen:
  server   --find-max-qps with a p99 SLO of 10 service times, one worker: the rate found against the M/D/1 answer
           for the service time the queue really saw (the median time a query held the worker);
  offline  batches of 8 on one worker: samples/s against 8 / the median hold (the share of the time the worker
           was busy; what is missing is the harness's gap between two batches);
  decoder  a server run of a decoder with a known prefill and decode step, the worker busy about half the time:
           the prefill against TTFT p50 less the admission wait's p50 (the first token one prefill after
           admission), and TPOT p50 beside the decode step.
Each is repeated --rounds times and printed per round with the ratio, then the median ratio over rounds. A busy
machine only ever adds latency: every ratio can fall on a noisy host, none should exceed 1 by more than the
simulation's noise. The unit tests bound only what no machine can change (tests/scenarios/test_serving.py);
these figures are the machine's, so print them on a quiet one.

    .venv/bin/python benchmarks/serving_accuracy.py [--rounds 3] [--service-ms 3] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.fake_engines import SleepDecoderFactory, SleepFactory  # noqa: E402
from helpers.queueing import md1_max_qps  # noqa: E402

from enginebench.measure.timing import StoppingRule  # noqa: E402
from enginebench.plan import Cell, Serving  # noqa: E402
from enginebench.workloads import TokenBatch, WorkloadData, WorkloadSpec  # noqa: E402
from enginebench.workloads.prompts import DecoderTest, PromptSet  # noqa: E402

_IDS = np.zeros((64, 8), dtype=np.int64)
WORKLOAD = WorkloadData(WorkloadSpec("synthetic", 0, 8, "zeros"), TokenBatch(_IDS, np.ones_like(_IDS), _IDS))


def server_round(service_s: float) -> dict:
    from enginebench.scenarios.server import run_server

    slo_ms = 10 * service_s * 1e3
    serving = Serving(slo_p99_ms=slo_ms, find_max_qps=True)
    cell = Cell("sleep", "fp32", "server", "synthetic", 1, 1, 1, serving)
    m, _ = run_server(SleepFactory(service_s), WORKLOAD, cell,
                      StoppingRule(duration_s=1.0, min_samples=1200, warmup_s=0.2))
    found = m.details["find_max_qps"]["bracket"][0]
    held_s = m.details["serving"]["batching"]["hold_ms_median"] / 1e3
    theory = md1_max_qps(held_s, slo_ms / 1e3)
    return {"found_qps": found, "md1_qps": theory, "held_ms": held_s * 1e3, "ratio": (found or 0) / theory}


def offline_round(service_s: float) -> dict:
    from enginebench.scenarios.offline import run_offline

    cell = Cell("sleep", "fp32", "offline", "synthetic", 8, 1, 1, Serving(max_batch=8))
    m, _ = run_offline(SleepFactory(service_s), WORKLOAD, cell,
                       StoppingRule(duration_s=1.0, min_samples=10, warmup_s=0.1))
    f = m.details["serving"]
    ideal = 8 / (f["batching"]["hold_ms_median"] / 1e3)
    return {"samples_per_s": f["samples_per_s"], "ideal_samples_per_s": ideal, "ratio": f["samples_per_s"] / ideal}


def decoder_round(service_s: float) -> dict:
    from enginebench.scenarios.decoder_server import run_decoder_server

    gen, prefill_s, decode_s = 6, service_s, service_s / 3
    qps = 0.48 / (prefill_s + (gen - 1) * decode_s)
    test = DecoderTest("pg", 8, gen)
    ids = np.arange(64, dtype=np.int64).reshape(8, 8) % 16
    prompts = PromptSet(WorkloadSpec(test.name, 0, 8, "synthetic"), test, ids, ids[:2])
    serving = Serving(qps=qps, slo_ttft_ms=200.0, slo_tpot_ms=50.0, max_batch=1)
    cell = Cell("sleep", "fp32", "server", prompts.spec.name, 1, 1, 1, serving)
    m = run_decoder_server(SleepDecoderFactory(prefill_s, decode_s), prompts, cell,
                           StoppingRule(duration_s=0.5, min_samples=10, warmup_s=0.1))
    f = m.details["serving"]
    ttft, tpot, wait = f["ttft_ms"]["p50"]["value"], f["tpot_ms"]["p50"]["value"], f["wait_ms"]["p50"]
    return {"ttft_p50_ms": ttft, "wait_p50_ms": wait, "prefill_ms": prefill_s * 1e3, "tpot_p50_ms": tpot,
            "decode_ms": decode_s * 1e3, "ratio": prefill_s * 1e3 / max(ttft - wait, 1e-9)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--service-ms", type=float, default=3.0, help="the synthetic engine's call time")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    service_s = args.service_ms / 1e3
    report = {}
    for name, run, says in (("server", server_round, "found / M/D/1"),
                            ("offline", offline_round, "samples/s / (8 / median hold)"),
                            ("decoder", decoder_round, "prefill / (TTFT p50 - wait p50)")):
        rounds = []
        for i in range(args.rounds):
            rounds.append(run(service_s))
            shown = ", ".join(f"{k} {v:.4g}" for k, v in rounds[-1].items())
            print(f"{name} round {i + 1}: {shown}", flush=True)
        ratio = statistics.median(r["ratio"] for r in rounds)
        print(f"{name}: {says} = {ratio:.2f} (median of {len(rounds)} rounds)", flush=True)
        report[name] = {"rounds": rounds, "median_ratio": ratio}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
