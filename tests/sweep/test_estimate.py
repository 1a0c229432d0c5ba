"""The time a run expects to take, from what stored runs of the same jobs spent beyond their durations."""

from __future__ import annotations

import pytest
from helpers.measurements import measurement

from enginebench.execution.local import LocalLauncher
from enginebench.execution.records import CellHistory
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Plan
from enginebench.store.database import ResultStore
from enginebench.store.model import Run
from enginebench.sweep.estimate import Estimate, add_plan, stored_cell_extras

FIDELITY = {"metric": "min_cosine", "value": 1.0, "ok": True, "threshold": 0.9999}


def _process(start: float, beyond_s: float, reused: bool):
    """A process that took 1 s of warm-up + duration, 0.1 s of load and `beyond_s` more."""
    m = measurement()
    m.details["measured_between"] = [start, start + 0.1 + 1.0 + beyond_s]
    if reused:
        m.details["fidelity_reused"] = True
    m.fidelity = FIDELITY
    return m


def test_a_cells_first_process_is_expected_to_measure_its_fidelity_and_its_later_ones_to_reuse_it(
        titles, minilm, tmp_path):
    plan = Plan(minilm, {"titles": titles}, [Cell("torch", "fp32", "latency", "titles", 1, 1, 1)],
                StoppingRule(duration_s=1.0, min_samples=1, warmup_s=0.0), {}, timeout_s=60, repeat=3)
    stored = LocalLauncher(plan)._result(0, CellHistory(measured=[
        (0, _process(0.0, 30.0, reused=False)), (1, _process(100.0, 2.0, reused=True)),
        (2, _process(200.0, 2.0, reused=True))]))
    with ResultStore(tmp_path / "r.db") as store:
        store.add_run(Run("run1", "2026-12-06T00:00:00+00:00", {}, {}))
        store.add_result("run1", stored, cell=0)
        extras = stored_cell_extras(store)
    key = ("torch", minilm.name, "fp32")
    assert {k: round(v, 6) for k, v in extras.items()} == {(*key, True): 30.0, (*key, False): 2.0}

    def expected_extra(launcher) -> float:
        est = Estimate()
        add_plan(est, plan, launcher, {}, extras)
        return pytest.approx(est.extra_s)

    assert expected_extra(LocalLauncher(plan)) == 30 + 2 + 2  # measured by the first process, reused twice
    resumed = LocalLauncher(plan, history={0: CellHistory(measured=[(0, _process(0.0, 30.0, reused=False))])})
    assert expected_extra(resumed) == 2 + 2  # the stored first process measured it
    measuring_each = LocalLauncher(plan)
    measuring_each.reuses_fidelity = False  # as the Ray launcher: every process measures it
    assert expected_extra(measuring_each) == 3 * 30
    only_old = {k: v for k, v in extras.items() if k[3]}  # runs from before: every process measured it
    est = Estimate()
    add_plan(est, plan, LocalLauncher(plan), {}, only_old)
    assert est.extra_s == pytest.approx(3 * 30)
