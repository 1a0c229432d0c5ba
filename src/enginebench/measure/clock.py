"""The clock a core runs at, measured, for the theoretical peak where the system does not say its maximum.

Many virtual machines have no cpufreq, and /proc/cpuinfo's "cpu MHz" is then the base clock: on a 2-core EPYC
it read 2.45 GHz, which put the fp32 peak (157 GFLOP/s) below the GEMM numpy measured (186). A chain of dependent
adds (clock.c) takes one cycle per add on every x86-64 core, so adds per second is the clock the core ran at
(its boost, while the rest of the machine allows it). Best of a few short runs: a run the host interrupts is
only slower."""

from __future__ import annotations

import ctypes
import platform
import time
from functools import lru_cache
from pathlib import Path

from enginebench.measure import native

SOURCE = Path(__file__).with_name("clock.c")
ADDS_PER_ROUND = 8
ROUNDS = 5_000_000  # 40 M adds: about 12 ms at 3.3 GHz
RUNS = 7


@lru_cache(maxsize=1)
def measured_clock_ghz(runs: int = RUNS, rounds: int = ROUNDS) -> tuple[float | None, str]:
    """(GHz, how) from the add chain, or (None, why not): it needs an x86-64 CPU and a C compiler."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None, f"no clock probe for {platform.machine()}"
    try:
        chain = ctypes.CDLL(str(native.shared_library(SOURCE, "clock-probe"))).enginebench_add_chain
    except (RuntimeError, OSError) as e:
        return None, str(e)
    chain.argtypes, chain.restype = [ctypes.c_uint64], ctypes.c_uint64
    chain(rounds // 10)  # wakes the core up to its clock
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        chain(rounds)
        best = min(best, time.perf_counter() - started)
    return rounds * ADDS_PER_ROUND / best / 1e9, f"measured: dependent adds on one core, best of {runs}"


__all__ = ["measured_clock_ghz"]
