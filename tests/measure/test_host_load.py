"""Ceilings measured beside other work say so: `enginebench machine` counts the cores other processes kept busy while
it measured (the kept triad figure, measured during a test session, was 18.3 GB/s; 22.9 idle), and every figure over those
ceilings (% roofline, % BW bound) carries the warning."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.measurements import measurement

from enginebench.measure import host_load
from enginebench.measure.host_load import BUSY_CORES, OthersLoad, busy_note
from enginebench.measure.peak import run_speed
from enginebench.plan import Cell
from enginebench.store.derive import build_result

MINILM = {"layers": 6, "hidden_size": 384, "heads": 12, "intermediate_size": 1536}


def test_other_processes_time_is_counted_and_this_ones_is_not(monkeypatch):
    clock = iter([100.0, 102.0])  # 2 s of wall time
    busy = iter([50.0, 53.0])  # every process on our CPUs: 3 s of CPU
    own = iter([10.0, 11.0])  # this process and its children: 1 s
    monkeypatch.setattr(host_load.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(host_load, "_cpus_busy_s", lambda: next(busy))
    monkeypatch.setattr(host_load, "_own_s", lambda: next(own))
    with OthersLoad() as load:
        pass
    assert load.cores == pytest.approx(1.0)  # (3 - 1) s over 2 s


def test_a_spinning_neighbour_is_seen_on_the_real_machine():
    """Others' load only adds (another worker of the suite may run too), so the bound holds on a shared host."""
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 3\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)  # it has started
        with OthersLoad() as load:
            time.sleep(1.0)
    finally:
        spinner.wait()
    assert load.cores is not None and load.cores >= 0.5


def test_busy_ceilings_put_a_warning_beside_every_share_of_them(cpu_features):
    from enginebench.formats.tables.encoder import roofline_notes

    def speed(others_cores: float) -> dict:
        return {"bandwidth_gbs": 30.0, "gemm_gflops": 188.0, "measured_at": "2026-12-06T00:00:00+00:00",
                "details": {"gemm_gflops_by_precision": {"fp32": 188.0}, "others_cores": others_cores,
                            "cpu_features": cpu_features.record()}}  # measured under this process's features

    assert busy_note(None) == "" and busy_note(speed(BUSY_CORES / 2)) == ""
    busy = speed(0.9)
    assert "0.9 cores busy" in busy_note(busy) and "`enginebench machine`" in busy_note(busy)

    def result(ceilings):
        cell = Cell("x", "fp32", "latency", "corpus", 32, 1, 1)
        calls = measurement(np.full(50, 500_000_000, dtype=np.int64), batch=32)  # 0.5 s a batch of 32
        details = {"workload": {"name": "corpus", "seq_len": 128}, "model_structure": MINILM,
                   "machine_speed": run_speed(ceilings)}  # what a run's results carry of the stored row
        return build_result(cell, [(0, calls)], model="minilm", seq_len=128, engine_version=None,
                            engine_options={}, details=details)

    quiet, loud = result(speed(0.05)), result(busy)
    assert quiet.roofline["pct_of_roofline"] > 0
    assert loud.roofline["pct_of_roofline"] == pytest.approx(quiet.roofline["pct_of_roofline"])
    assert loud.roofline["ceilings_busy_cores"] == 0.9 and "ceilings_busy_cores" not in quiet.roofline
    assert not any("may read high" in n for n in roofline_notes([quiet]))
    assert any(n.startswith("% roofline may read high: the ceilings were measured while other processes kept 0.9")
               for n in roofline_notes([loud]))
    from enginebench.analysis.recommend import roofline_clause  # and recommend's and tune's answer

    assert "may read high" in roofline_clause(loud) and "may read high" not in roofline_clause(quiet)


def test_enginebench_machine_warns_when_it_was_not_alone():
    from enginebench.cli.system import machine_lines

    speed = {"bandwidth_gbs": 18.3, "gemm_gflops": 186.0,
             "details": {"triad": {"threads": 2, "runs_s": [0.1]}, "gemm": {"n": 1024}, "others_cores": 0.9}}
    lines = machine_lines(speed, "eb.db")
    assert any(line.startswith("warning: the ceilings were measured while other processes kept 0.9") for line in lines)
    speed["details"]["others_cores"] = 0.0
    assert not any(line.startswith("warning:") for line in machine_lines(speed, "eb.db"))
