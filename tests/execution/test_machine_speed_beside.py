"""Each encoder cell's measuring process times the stored reference GEMM just before and just after the cell, so
its roofline share can say how fast the machine was while it was measured (measure/compute_roofline.py)."""

from __future__ import annotations

import pytest
from helpers.fake_engines import FAULT_PLUGINS

from enginebench.config import RunConfig
from enginebench.execution.local import LocalLauncher
from enginebench.formats.tables.encoder import notes
from enginebench.planning import plan_from_config


def _results(monkeypatch, speed: dict | None) -> list:
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)
    plan = plan_from_config(RunConfig.from_keywords(engine="fault", workload="titles", scenario="latency",
                                                    batch_size=[1, 4], duration=0.2, warmup=0.05,
                                                    min_samples=3, repeat=1, option={"fault": {"call_ms": 1}}))
    plan.machine_speed = speed
    results = []
    LocalLauncher(plan).run(lambda index, result: results.append(result))
    assert results and all(r.status == "ok" for r in results), [r.error for r in results]
    return results


def test_a_cell_measured_on_a_machine_far_slower_than_its_stored_speed_says_so(monkeypatch):
    # a reference no machine reaches: every cell ran at a sliver of it
    reference = {"gflops": 1e6, "n": 128, "threads": 1}
    speed = {"measured_at": "t", "gemm_gflops_by_precision": {"fp32": 200.0}, "gemm_probe": reference}
    results = _results(monkeypatch, speed)
    for r in results:
        probes = [rep["measurement"]["details"]["gemm_probe"] for rep in r.repetitions]
        beside = r.roofline["beside"]
        assert beside["drifted"] and 0 < beside["factor"] < 0.01 and beside["n"] == 128
        assert len(probes) == 1 and len(beside["probe_gflops"]) == 2  # before and after the cell
        assert beside["pct_of_roofline"] == pytest.approx(r.roofline["pct_of_roofline"] / beside["factor"])
        assert all(p["before"] > 0 and p["after"] > 0 and (p["n"], p["threads"]) == (128, 1) for p in probes)
    # one process measured both cells: the first one's "after" probe is the second one's "before"
    first, second = ([rep["measurement"]["details"]["gemm_probe"] for rep in r.repetitions][0] for r in results)
    assert second["taken_at"][0] == first["taken_at"][1] and first["taken_at"][0] < first["taken_at"][1]
    assert second["before"] == first["after"]
    lines = [line for line in notes(results) if "of its stored GEMM speed beside this cell" in line]
    assert len(lines) == len(results) and "numpy fp32 128²" in lines[0]


def test_without_a_stored_reference_no_probe_runs_and_no_claim_is_made(monkeypatch):
    for r in _results(monkeypatch, {"measured_at": "t", "gemm_gflops_by_precision": {"fp32": 200.0}}):
        assert "beside" not in r.roofline
        assert not any("gemm_probe" in rep["measurement"]["details"] for rep in r.repetitions)
    assert not any("stored GEMM speed" in line for line in notes(_results(monkeypatch, None)))
