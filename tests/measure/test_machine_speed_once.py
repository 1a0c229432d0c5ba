"""A run on a machine without stored ceilings measures them before its first cell, says so, and keeps them for
every later run on the machine, whatever its --db; CPU features narrowed by ENGINEBENCH_CPU_FEATURES are another
machine's ceilings."""

import functools
import socket
from types import SimpleNamespace

import pytest

from enginebench.api import this_machine_speed
from enginebench.measure import cpu_features, roofline
from enginebench.plan import Cell
from enginebench.store.database import ResultStore


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Real measurements, small enough for a test, counted; a cache of this test's own."""
    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(cpu_features.ENV, raising=False)
    calls = []
    small = functools.partial(roofline.measure_machine, triad_elements=1 << 18, gemm_n=128, runs=1)
    monkeypatch.setattr(roofline, "measure_machine", lambda: calls.append(1) or small())
    return calls


def _plan(scenario: str, engine: str = "onnxruntime"):
    return SimpleNamespace(cells=[Cell(engine, "fp32", scenario, "titles", 1, 1, 2)])


def test_the_first_run_measures_the_ceilings_once_and_every_later_one_reuses_them(counted, tmp_path):
    notes = []
    with ResultStore(str(tmp_path / "a.db")) as a:
        speed = this_machine_speed(a, _plan("latency"), notes.append)
        assert counted == [1] and speed["hostname"] == socket.gethostname() and speed["gemm_gflops"] > 0
        assert "measuring memory bandwidth and GEMM" in notes[0] and "ceilings measured in" in notes[1]
        assert a.machine_speed(socket.gethostname())["measured_at"] == speed["measured_at"]  # stored with the run
        assert this_machine_speed(a, _plan("latency"))["measured_at"] == speed["measured_at"]
    with ResultStore(str(tmp_path / "b.db")) as b:  # another database on the same machine
        assert this_machine_speed(b, _plan("throughput"))["measured_at"] == speed["measured_at"]
        assert b.machine_speed(socket.gethostname())["measured_at"] == speed["measured_at"]
    assert counted == [1]


def test_a_plan_that_shows_no_roofline_measures_nothing(counted, tmp_path):
    notes = []
    with ResultStore(str(tmp_path / "c.db")) as store:
        assert this_machine_speed(store, _plan("server"), notes.append) is None
    assert counted == [] and notes == []


def test_a_run_against_a_server_measures_no_ceilings_of_the_client_machine(counted, tmp_path):
    """The server at --endpoint runs on hardware this machine cannot measure: its latency and concurrency
    cells show no roofline, so they neither wait for the ceilings nor probe GEMM around each cell."""
    from enginebench.scenarios.registry import scenario_class

    for scenario in ("latency", "concurrency"):
        assert scenario_class(scenario).shows_roofline("onnxruntime")
        assert not scenario_class(scenario).shows_roofline("endpoint")
        with ResultStore(str(tmp_path / f"{scenario}.db")) as store:
            assert this_machine_speed(store, _plan(scenario, "endpoint")) is None
    assert counted == []


def test_narrowed_cpu_features_have_ceilings_of_their_own(counted, tmp_path, monkeypatch):
    with ResultStore(str(tmp_path / "d.db")) as store:
        native = this_machine_speed(store, _plan("latency"))
        monkeypatch.setenv(cpu_features.ENV, "avx2")
        narrowed = cpu_features.current().narrowed_to
        avx2 = this_machine_speed(store, _plan("latency"))
    if narrowed:  # an AVX-512 machine acting as an AVX2 one: its ceilings are measured under that set
        assert counted == [1, 1] and avx2["measured_at"] >= native["measured_at"]
        assert avx2["details"]["cpu_features"]["narrowed_to"] == narrowed
    else:  # already an AVX2-only machine: the same ceilings
        assert counted == [1] and avx2 == native


def test_runs_started_together_on_a_fresh_machine_measure_once(counted, tmp_path, monkeypatch):
    """Two first runs at once (two terminals, two test workers): one measures while the other waits for its
    figures, instead of each timing its GEMMs against the other's load and keeping half the ceilings."""
    import threading
    import time

    measure = roofline.measure_machine
    monkeypatch.setattr(roofline, "measure_machine", lambda: time.sleep(0.5) or measure())
    notes: dict[str, list[str]] = {"a": [], "b": []}
    speeds = {}

    def first_run(name: str) -> None:
        with ResultStore(str(tmp_path / f"{name}.db")) as store:
            speeds[name] = this_machine_speed(store, _plan("latency"), notes[name].append)

    threads = [threading.Thread(target=first_run, args=(name,)) for name in notes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counted == [1] and speeds["a"] == speeds["b"]
    said = sorted(n[-1] for n in notes.values())
    assert said[0].startswith("ceilings measured by another run on this machine meanwhile, ready in ")
    assert said[1].startswith("ceilings measured in ")
