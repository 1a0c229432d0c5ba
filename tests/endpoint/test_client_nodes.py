"""--client-nodes K: a concurrency cell's clients shared out over K client nodes, their records merged onto one
clock over the window all of them measured in, the nodes named in the result; refused, before anything is
measured, where it cannot apply. (On a real two-node Ray cluster against a real server: tests/execution/test_ray.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from enginebench.errors import UsageError
from enginebench.execution.ray import check_client_nodes
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.concurrency import Clients
from enginebench.scenarios.requests import client_share, merge_client_parts, request_figures


def _part(clients: int, start_ns: int, stop_ns: int, offset_ns: int, every_ns: int, ceiling: float) -> Measurement:
    """A client node's measurement: each client sends back to back every `every_ns` from start_ns (its own
    clock; epoch = own + offset_ns), one request in flight past the stop (the tail)."""
    records = []
    for c in range(clients):
        for sent in range(start_ns, stop_ns + every_ns, every_ns):
            records.append({"client": c, "sent_ns": sent, "first_ns": None, "done_ns": sent + every_ns,
                            "scheduled_ns": None, "failure": None, "status": 200, "error": None, "input_tokens": 8,
                            "item": 0, "phase": "measured" if sent + every_ns <= stop_ns else "tail"})
    measured = [r for r in records if r["phase"] == "measured"]
    samples = [np.asarray([r["done_ns"] - r["sent_ns"] for r in measured if r["client"] == c]) for c in range(clients)]
    return Measurement(worker_samples=samples, items_per_call=1, tokens_per_item=8.0, load_s=0.1, peak_rss_mb=50.0,
                       executed_precision="served", wall_s=(stop_ns - start_ns) / 1e9,
                       details={"requests": records, "clients": clients, "window_ns": stop_ns - start_ns,
                                "window": [start_ns, stop_ns], "notes": [], "endpoint": {"slo": {}},
                                "client_ceiling": {"requests_per_s": ceiling, "clients": clients, "window_s": 1.0,
                                                   "failed": 0},
                                "client_part": {"part": 0, "parts": 2, "epoch_offset_ns": offset_ns}})


def test_clients_are_shared_out_with_the_first_nodes_taking_the_rest():
    assert [client_share(5, k, 2) for k in range(2)] == [3, 2]
    assert [client_share(8, k, 3) for k in range(3)] == [3, 3, 2]
    assert sum(client_share(7, k, 4) for k in range(4)) == 7


def test_the_nodes_records_are_merged_on_one_clock_over_the_window_all_of_them_measured():
    ms = 1_000_000
    # node a: its clock reads 0 at epoch 10 s, measures 0-2000 ms; node b: reads 5 s at epoch 10 s, and started
    # 100 ms later (epoch 10.1-12.2 s); each of its 2 clients sends a request every 10 ms
    a = _part(2, 0, 2000 * ms, 10_000 * ms, 10 * ms, ceiling=900.0)
    b = _part(2, 5100 * ms, 7200 * ms, 5_000 * ms, 10 * ms, ceiling=1100.0)
    merged = merge_client_parts([a, b], [{"hostname": "a", "ray_node_id": "n1"}, {"hostname": "b", "ray_node_id": "n2"}])
    d = merged.details
    # the window all measured in: epoch 10.1 s to 12.0 s
    assert d["window"] == [10_100 * ms, 12_000 * ms] and d["window_ns"] == 1900 * ms
    assert merged.wall_s == pytest.approx(1.9)
    assert {r["client"] for r in d["requests"]} == {0, 1, 2, 3} and d["clients"] == 4
    assert min(r["sent_ns"] for r in d["requests"] if r["client"] >= 2) == 10_100 * ms  # b's, on the epoch clock
    assert [r["sent_ns"] for r in d["requests"]] == sorted(r["sent_ns"] for r in d["requests"])
    assert len(merged.worker_samples) == 4
    assert d["client_ceiling"]["requests_per_s"] == 2000.0 and d["client_ceiling"]["clients"] == 4
    assert [(n["hostname"], n["clients"]) for n in d["client_nodes"]] == [("a", 2), ("b", 2)]
    assert "client load spread over 2 nodes (a: 2 clients, b: 2 clients)" in d["notes"][-1]
    assert "client_part" not in d
    # request/s counts what completed inside that window from both nodes: 4 clients x 100/s
    f = request_figures([merged])
    assert f["requests_per_s"]["value"] == pytest.approx(400.0, rel=0.02)
    assert f["client_ceiling"]["requests_per_s"] == 2000.0


def test_nodes_that_never_measured_together_are_not_merged():
    ms = 1_000_000
    a = _part(1, 0, 1000 * ms, 0, 10 * ms, ceiling=900.0)
    b = _part(1, 2000 * ms, 3000 * ms, 0, 10 * ms, ceiling=900.0)
    with pytest.raises(RuntimeError, match="did not overlap"):
        merge_client_parts([a, b], [{"hostname": "a"}, {"hostname": "b"}])


def _plan(engine: str, clients: int):
    return SimpleNamespace(cells=[Cell(engine, "served", "concurrency", "titles", 1, 1, 1, settings=Clients(clients))])


@pytest.mark.parametrize("plan, ray, given, says", [
    (_plan("endpoint", 4), None, "2", "give --ray ADDRESS"),
    (_plan("onnxruntime", 4), "local", "2", "give --endpoint URL"),
    (_plan("endpoint", 1), "local", "2", "no cell has 2 clients or more"),
    (_plan("endpoint", 4), "local", "two", "--client-nodes 'two' is not a whole number"),
    (_plan("endpoint", 4), "local", "0", "--client-nodes 0 must be at least 1"),
])
def test_client_nodes_are_refused_where_they_cannot_apply(plan, ray, given, says):
    with pytest.raises(UsageError, match=says.replace("-", r"\-")):
        check_client_nodes([plan], ray, given)


def test_a_sweep_takes_client_nodes_too_and_refuses_them_without_ray(tmp_path, monkeypatch):
    from helpers.fake_engines import FAULT_PLUGINS

    from enginebench.store.database import ResultStore
    from enginebench.sweep.runner import part_states, run_sweep
    from enginebench.sweep.spec import load_sweep

    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)
    (tmp_path / "s.toml").write_text('engine = "fault"\nworkload = "titles"\nscenario = "latency"\n')
    sweep = load_sweep(str(tmp_path / "s.toml"), pin_cpus=False)
    db = str(tmp_path / "s.db")
    with pytest.raises(UsageError, match="give --ray ADDRESS"):
        run_sweep(sweep, db, client_nodes="2")
    with ResultStore(db) as store:
        assert store.sweep_cell_counts(sweep.sweep_id) == {}  # refused before the sweep was claimed or run
        (state,) = part_states(sweep, store, ray="local", client_nodes=2)
    assert state.launcher.client_nodes == 2 and "client load over 2 nodes" in state.launcher.where


def test_only_a_concurrency_cell_of_enough_clients_against_a_server_is_shared_out():
    from enginebench.scenarios.registry import scenario_class

    concurrency = scenario_class("concurrency")
    assert check_client_nodes([_plan("endpoint", 4)], "local", "2") == 2
    assert check_client_nodes([_plan("torch", 4)], None, None) == 1
    assert concurrency.spread_clients(_plan("endpoint", 4).cells[0]) == 4
    assert concurrency.spread_clients(_plan("onnxruntime", 4).cells[0]) == 0  # in-process workers, not clients
    assert scenario_class("latency").spread_clients(_plan("endpoint", 4).cells[0]) == 0
