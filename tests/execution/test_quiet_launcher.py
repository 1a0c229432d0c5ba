"""The measuring process is left alone: the parent builds, stores and shows each result while no cell is being
measured (the child waits for its word before the next cell), so its work never shares the cores with a
measurement."""

from __future__ import annotations

import time

import pytest

from helpers.fake_engines import FAULT_PLUGINS

from enginebench.config import RunConfig
from enginebench.execution.local import LocalLauncher
from enginebench.planning import plan_from_config

HEAVY_STORE_S = 1.0  # a result that takes the parent this long to build and store (a big run, a slow disk)


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_no_cell_is_measured_while_the_parent_stores_a_result(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)
    plan = plan_from_config(RunConfig.from_keywords(engine="fault", workload="titles", scenario="latency",
                                                    batch_size=[1, 2, 4], duration=0.3, warmup=0.05, min_samples=3,
                                                    repeat=1, option={"fault": {"call_ms": 1}}))
    storing, results = [], []

    def emit(index, result):
        started = time.time()
        time.sleep(HEAVY_STORE_S)
        storing.append((started, time.time()))
        results.append(result)

    LocalLauncher(plan).run(emit)
    assert [r.status for r in results] == ["ok"] * 3
    measuring = [r.details["measured_between"] for r in results]
    assert all(end - start >= 0.3 for start, end in measuring)
    for start, end in measuring:
        for busy_from, busy_to in storing:
            assert end <= busy_from or start >= busy_to, (measuring, storing)
