"""How much does the harness add to what it measures?

Times a ~1 ms call two ways in this one process, alternating rounds so drift hits both alike:
  bare:    t0 = clock(); for _ in range(n): call(); t1 = clock()      -> (t1 - t0) / n per call
  harness: enginebench.measure.timing.measure_calls (per-call clock reads, the stopping rule)
and prints the ratio of the harness's median (and mean) to the bare loop's per-call time. Target: <= 1.01.

    .venv/bin/python benchmarks/harness_overhead.py [--target-ms 1.0] [--rounds 6] [--seconds 2]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: a multi-threaded BLAS call would measure the scheduler

import argparse
import time

import numpy as np

from enginebench.measure.timing import StoppingRule, measure_calls


def make_call(target_ms: float):
    """A deterministic CPU-bound call (float64 matmul) sized to take about target_ms."""
    n = 64
    while True:
        a = np.random.default_rng(0).standard_normal((n, n))
        t0 = time.perf_counter()
        for _ in range(20):
            a @ a
        per = (time.perf_counter() - t0) / 20 * 1e3
        if per >= target_ms or n > 2048:
            break
        n = int(n * min(2.0, (target_ms / per) ** (1 / 3) * 1.05))
    return (lambda x: x @ x), a, per


def bare_loop(call, x, seconds: float) -> tuple[float, int]:
    n = 0
    t0 = time.perf_counter_ns()
    stop = t0 + int(seconds * 1e9)
    while True:
        for _ in range(50):
            call(x)
        n += 50
        t1 = time.perf_counter_ns()
        if t1 >= stop:
            return (t1 - t0) / n, n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target-ms", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args()
    call, x, per = make_call(args.target_ms)
    rule = StoppingRule(duration_s=args.seconds, min_samples=10, warmup_s=0.2)
    bare_loop(call, x, 0.5)  # warm caches and clocks
    bare, med, mean = [], [], []
    for _ in range(args.rounds):
        b, _n = bare_loop(call, x, args.seconds)
        s = measure_calls(call, [x], rule)
        bare.append(b)
        med.append(float(np.median(s)))
        mean.append(float(np.mean(s)))
    # the fastest round of each is the least disturbed by other processes on a shared machine
    b, m, a = min(bare), min(med), min(mean)
    print(f"call: float64 matmul {x.shape[0]}x{x.shape[0]}, ~{per:.3f} ms; {args.rounds} alternating rounds of {args.seconds:g} s")
    print("figures below: the least disturbed (fastest) round of each")
    print(f"bare loop, per call      : {b / 1e6:.4f} ms  (rounds: {', '.join(f'{v / 1e6:.4f}' for v in bare)})")
    print(f"harness median per call  : {m / 1e6:.4f} ms  (rounds: {', '.join(f'{v / 1e6:.4f}' for v in med)})")
    print(f"harness mean per call    : {a / 1e6:.4f} ms")
    print(f"ratio harness median / bare : {m / b:.4f}")
    print(f"ratio harness mean / bare   : {a / b:.4f}   (target <= 1.01)")


if __name__ == "__main__":
    main()
