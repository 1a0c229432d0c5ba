"""The store across schemas: databases written by older versions read back as their own code showed them, and
schema 5 keeps what was measured and derives the figures on read (store/model.py's schema history)."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from enginebench.cli import main
from enginebench.execution.faults import Failure
from enginebench.execution.local import LocalLauncher
from enginebench.execution.records import CellHistory, history_of
from enginebench.measure import stats
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Plan
from enginebench.scenarios import registry
from enginebench.scenarios.base import Measurement
from enginebench.store import database as store_module
from enginebench.store import derive as build
from enginebench.store.database import ResultStore
from enginebench.store.model import Result, Run

FIXTURES = Path(__file__).parents[1] / "fixtures"
DERIVED = ("latency_ms", "throughput", "verdict", "serving", "figures", "fidelity", "prefill_tokens_per_s",
           "decode_tokens_per_s", "ttft_ms", "itl_ms", "samples", "executed_precision", "peak_rss_mb")


def _cell(r: dict) -> tuple:
    """What a table shows of a result: its cell, its status and its two headline figures."""
    return (r["engine"], r["precision"], r["scenario"], r["workload"], r["batch_size"], r["workers"], r["status"],
            (r["latency_ms"] or {}).get("median"), (r["throughput"] or {}).get("items_per_s"))


def _old_database(version: int, tmp_path: Path) -> tuple[Path, list[dict]]:
    """A copy of the fixture (opening a database brings its schema number up to date) and what its code showed."""
    db = tmp_path / f"schema{version}.db"
    shutil.copy(FIXTURES / f"schema{version}.db", db)
    return db, json.loads((FIXTURES / f"schema{version}.expected.json").read_text())


@pytest.mark.parametrize("version", [2, 3, 4])
def test_a_database_of_each_older_schema_shows_what_its_own_code_showed(version, tmp_path):
    db, expected = _old_database(version, tmp_path)
    shown = [(r["scenario"], r["status"]) for run in expected for r in run["results"]]
    assert {"failed", "ok"} <= {status for _, status in shown}  # the fixture holds what it should
    assert {"latency", "throughput", "generate"} <= {scenario for scenario, _ in shown}
    with ResultStore(db) as store:
        assert [run_id for run_id, _, _ in store.run_ids()][::-1] == [run["run_id"] for run in expected]
        runs = [store.load_run(run["run_id"]) for run in expected]
    for run, old in zip(runs, expected):
        assert run.schema_version == version
        now = [r.to_dict(with_samples=False) for r in run.results]
        assert [_cell(r) for r in now] == [_cell(r) for r in old["results"]]
        for new, was in zip(now, old["results"]):
            assert {k: new[k] for k in was} == was  # every field the old code had, as it had it
            assert all(new[k] is None for k in set(new) - set(was) - {"repetitions"})


@pytest.mark.parametrize("version", [2, 3, 4])
def test_show_prints_the_cells_of_an_older_database_as_its_own_code_stored_them(version, tmp_path, capsys):
    db, expected = _old_database(version, tmp_path)
    for old in expected:
        assert main(["show", old["run_id"], "--db", str(db), "--format", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert [_cell(r) for r in shown["results"]] == [_cell(r) for r in old["results"]]


def test_the_schema_4_fixture_holds_serving_and_a_scenarios_own_settings(tmp_path):
    _, expected = _old_database(4, tmp_path)
    results = {r["scenario"]: r for run in expected for r in run["results"]}
    assert results["server"]["serving"]["latency_ms"]["p99"]["value"] > 0
    assert results["concurrency"]["settings"] == {"clients": 2} and results["concurrency"]["figures"]


def _close(a, b, rel: float = 1e-3) -> bool:
    """Equal, floats within `rel` (a repetition's load and wall times are stored rounded to 0.1 ms)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) or _newly_derived(k, a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel))
    return a == b


def _newly_derived(key: str, was, now) -> bool:
    """An interval today's statistics derive where the code that wrote the database derived none (a server
    cell's achieved-rate interval over its repetitions came after schema 4): deriving on read is meant to give
    old runs what the new code computes."""
    if key == "notes" and isinstance(was, list) and isinstance(now, list):
        now = [n for n in now if not _SPIKE_NOTE.match(n)]
        return len(was) == len(now) and all(a == b or _wide_note_renamed(a, b) for a, b in zip(was, now))
    if key == "ci95" and was and now and math.isclose(was[1], now[1], rel_tol=1e-3) and now[0] < was[0]:
        return True  # items/s over spiky calls: the low end at t's 99% quantile since 2026-12-07 (a note says so)
    return key.endswith("ci95") and was is None and isinstance(now, (list, tuple)) and len(now) == 2


_SPIKE_NOTE = re.compile(r"items/s: [0-9.]+% of calls took over 2× their worker's median")
_WIDE_NOTE = re.compile(r"(median latency|items/s|tokens/s): 95% CI over (\d+) processes")


def _wide_note_renamed(was: str, now: str) -> bool:
    """The note on an interval wide for want of processes names the figure its cell is judged on since
    2026-12-07 (items/s for a throughput or concurrency cell, with that figure's width), where schema 4's code
    named the median latency: over as many processes."""
    a, b = _WIDE_NOTE.match(was), _WIDE_NOTE.match(now)
    return bool(a and b and a[2] == b[2])


def test_every_scenario_of_the_schema_4_fixture_derives_its_stored_figures_again_from_what_it_measured(
        tmp_path, monkeypatch):
    """Schema 4 results carry their measurements and were derived by today's statistics: stored the schema 5
    way, each reads back with the figures schema 4 stored (latency, throughput, generate, server, concurrency),
    plus the intervals today's statistics add where schema 4's code had none."""
    db, _ = _old_database(4, tmp_path)
    with ResultStore(db) as old:
        runs = [old.load_run(run_id) for run_id, _, _ in old.run_ids()]
    ok = [r for run in runs for r in run.results if r.status == "ok"]
    assert {r.scenario for r in ok} == {"latency", "throughput", "generate", "server", "concurrency"}
    with ResultStore(tmp_path / "new.db") as new:
        new.add_run(Run("again", "2026-12-03T00:00:00+00:00", {}, {}))
        for i, r in enumerate(ok):
            new.add_result("again", r, cell=i)
        kept = [json.loads(row[0]) for row in new.conn.execute("SELECT result FROM results ORDER BY cell")]
        monkeypatch.setattr(store_module, "derivation_digest", lambda: "other code")  # not from the cache
        back = new.load_run("again").results
    assert all(build.is_stored_form(d) for d in kept)
    for was, now in zip(ok, back):
        was, now = was.to_dict(), now.to_dict()
        differ = [k for k in was if not _close(was[k], now[k])]
        assert not differ, f"{was['scenario']} {was['workload']}: {differ} differ"


def _measurement(median_ns: float, seed: int, fidelity: dict | None = None) -> Measurement:
    samples = (median_ns * (1 + 0.02 * np.random.default_rng(seed).standard_normal(60))).astype(np.int64)
    return Measurement(worker_samples=[samples], items_per_call=2, tokens_per_item=12.0, load_s=0.25,
                       peak_rss_mb=120.5, executed_precision="fp32", wall_s=0.5, fidelity=fidelity,
                       details={"threads_used": 1, "notes": ["a note of the measuring process"], "node": f"n{seed}"})


@pytest.fixture
def launched(titles, minilm):
    """Results as the launcher builds them: a reference cell measured twice after one failed attempt, and a
    cell that failed every attempt."""
    cells = [Cell(engine, "fp32", "latency", "titles", 2, 1, 1) for engine in ("torch", "onnxruntime")]
    plan = Plan(minilm, {"titles": titles}, cells, StoppingRule(duration_s=0, min_samples=1), {}, timeout_s=60,
                repeat=3)
    orch = LocalLauncher(plan)
    fidelity = {"metric": "min_cosine", "value": 1.0, "ok": True, "threshold": 0.9999}
    ok = orch._result(0, CellHistory(
        measured=[(0, _measurement(2e6, 0, fidelity)), (2, _measurement(2.1e6, 2, fidelity))],
        failed={1: Failure("RuntimeError: boom")},
        attempts=[{"repetition": 1, "attempt": 1, "kind": "error", "error": "RuntimeError: boom"}]))
    killed = {"repetition": 0, "attempt": 1, "kind": "signal", "error": "killed"}
    ok.details["node"] = "n2"  # as the Ray launcher sets it after build_result: the last repetition's node
    failed = orch._result(1, CellHistory(failed={0: Failure("killed", "signal")}, attempts=[killed]))
    return ok, failed


def _stored(tmp_path: Path, results: list[Result]) -> Path:
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.add_run(Run("run1", "2026-12-03T00:00:00+00:00", {}, {}))
        for i, r in enumerate(results):
            store.add_result("run1", r, cell=i)
    return db


def test_a_new_result_keeps_what_was_measured_and_reads_back_with_the_figures_build_result_gives(
        launched, tmp_path, monkeypatch):
    ok, failed = launched
    assert ok.fidelity["reference"] is True and "repetition 2 failed (RuntimeError: boom)" in ok.verdict["reasons"][-1]
    db = _stored(tmp_path, [ok, failed])
    with ResultStore(db) as store:
        rows = store.conn.execute("SELECT result, median_ms, items_per_s FROM results ORDER BY cell").fetchall()
        back = store.load_run("run1").results  # from the cache
        monkeypatch.setattr(store_module, "derivation_digest", lambda: "other code")
        derived = store.load_run("run1").results  # from what was measured alone
    kept, median_ms, items_per_s = json.loads(rows[0][0]), rows[0][1], rows[0][2]
    assert build.is_stored_form(kept) and median_ms is None and items_per_s is None
    assert not set(DERIVED) & set(kept)
    assert not {"wall_s", "processes", "notes", "threads_used"} & set(kept["details"])  # derived or measured
    assert all("worker_samples" not in rep and "measurement" in rep for rep in kept["repetitions"])
    assert json.loads(rows[1][0]) == failed.to_dict(with_samples=False)  # a failed cell: as before
    assert back == derived == [ok, failed]


def test_a_stored_result_is_derived_again_when_the_deriving_code_changes_and_read_from_the_cache_when_not(
        launched, tmp_path, monkeypatch):
    db = _stored(tmp_path, list(launched))
    with ResultStore(db) as store:
        monkeypatch.setattr(build, "build_result", lambda *a, **k: pytest.fail("derived again, cache unused"))
        assert store.load_run("run1").results[0].latency_ms["median"] == launched[0].latency_ms["median"]
        monkeypatch.undo()
        # a better statistic: every process's median doubled stands for it, with the digest of changed code
        real = stats.median_over_processes
        monkeypatch.setattr(stats, "median_over_processes", lambda groups: tuple(
            2 * x if isinstance(x, float) else x for x in real(groups)))
        monkeypatch.setattr(store_module, "derivation_digest", lambda: "changed code")
        back = store.load_run("run1").results[0]
        cached = store.conn.execute("SELECT digest FROM derived").fetchall()
    assert back.latency_ms["median"] == pytest.approx(2 * launched[0].latency_ms["median"])
    assert cached == [("changed code",)]  # derived once more, kept for the next read


def test_a_result_of_a_scenario_this_version_does_not_know_reads_back_as_the_version_that_stored_it_derived_it(
        launched, tmp_path, monkeypatch):
    db = _stored(tmp_path, list(launched))
    monkeypatch.setattr(store_module, "derivation_digest", lambda: "older code")
    known = dict(registry.REGISTRY)
    del registry.REGISTRY["latency"]
    registry.scenario_class.cache_clear()  # it would still know the scenario
    try:
        with ResultStore(db) as store:
            assert store.load_run("run1").results == list(launched)
    finally:  # the same dict in the same order (monkeypatch.delitem would put latency back last)
        registry.REGISTRY.clear()
        registry.REGISTRY.update(known)
        registry.scenario_class.cache_clear()


def test_the_derivation_digest_follows_the_source_of_the_statistics(tmp_path):
    root = Path(build.__file__).resolve().parent.parent
    copy = tmp_path / "enginebench"
    for part in build._DERIVING:
        source = root / part
        if source.is_dir():
            shutil.copytree(source, copy / part)
        else:
            (copy / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, copy / part)
    assert build.digest_of(copy) == build.derivation_digest()
    stats_py = copy / "measure" / "stats.py"
    stats_py.write_text(stats_py.read_text().replace("BOOTSTRAP_RESAMPLES = 2000", "BOOTSTRAP_RESAMPLES = 4000"))
    assert build.digest_of(copy) != build.derivation_digest()


def test_a_resume_reads_the_measurements_and_failures_of_a_result_stored_raw(launched, tmp_path):
    ok, _ = launched
    with ResultStore(_stored(tmp_path, list(launched))) as store:
        history = history_of(store.cell_results("run1")[0])
    assert [r for r, _ in history.measured] == [0, 2] and history.failed == {1: Failure("RuntimeError: boom")}
    assert history.finished() == {0, 1, 2}
    m = history.measured[1][1]
    assert m.worker_samples[0].tolist() == ok.repetitions[1]["worker_samples"][0] and m.items_per_call == 2


def test_a_run_of_a_hundred_raw_results_loads_in_well_under_a_second(launched, tmp_path):
    ok, _ = launched
    db = _stored(tmp_path, [ok] * 100)
    with ResultStore(db) as store:
        started = time.process_time()  # CPU time: a host that leaves this process waiting does not count
        results = store.load_run("run1").results
        took = time.process_time() - started
    assert len(results) == 100 and results[-1] == ok
    assert took < 1.0, f"{took:.2f} CPU-s"


def _measured_at(median_ns: float, seed: int, start: float, probe: float) -> Measurement:
    m = _measurement(median_ns, seed)
    m.details.update(measured_between=[start, start + 5.0], tpot_ns=[1000 + seed, 2000 + seed],
                     gemm_probe={"before": {"gflops": probe}, "after": {"gflops": probe}})
    return m


def test_each_process_keeps_its_own_probe_and_span_and_the_result_spans_them_all(titles, minilm, tmp_path):
    cell = Cell("torch", "fp32", "latency", "titles", 2, 1, 1)
    plan = Plan(minilm, {"titles": titles}, [cell], StoppingRule(duration_s=0, min_samples=1), {}, timeout_s=60,
                repeat=2)
    ok = LocalLauncher(plan)._result(0, CellHistory(measured=[(0, _measured_at(2e6, 0, 100.0, 150.0)),
                                                              (1, _measured_at(2e6, 1, 90.0, 120.0))]))
    assert ok.details["measured_between"] == [90.0, 105.0]  # the first start to the last end, not one process's
    assert "gemm_probe" not in ok.details and "tpot_ns" not in ok.details
    assert [rep["measurement"]["details"]["gemm_probe"]["before"]["gflops"] for rep in ok.repetitions] == [150, 120]
    db = _stored(tmp_path, [ok])
    with ResultStore(db) as store:
        kept = json.loads(store.conn.execute("SELECT result FROM results").fetchone()[0])
        kinds = {k for (k,) in store.conn.execute("SELECT kind FROM samples")}
        assert [store.load_run("run1").results[0] for _ in range(2)] == [ok, ok]  # derived, then from the cache
    assert "measured_between" not in kept["details"]  # derived on read
    assert "tpot_ns" in kinds  # one copy: an array of the repetition, not also in its JSON and its measurement's
    assert all("tpot_ns" not in rep and "tpot_ns" not in rep["measurement"]["details"] for rep in kept["repetitions"])
    assert [rep["tpot_ns"] for rep in ok.repetitions] == [[1000, 2000], [1001, 2001]]


def test_a_tpot_kept_in_the_json_by_an_earlier_version_reads_back_every_time(titles, minilm, tmp_path):
    cell = Cell("torch", "fp32", "latency", "titles", 2, 1, 1)
    plan = Plan(minilm, {"titles": titles}, [cell], StoppingRule(duration_s=0, min_samples=1), {}, timeout_s=60,
                repeat=1)
    ok = LocalLauncher(plan)._result(0, CellHistory(measured=[(0, _measured_at(2e6, 0, 100.0, 150.0))]))
    db = _stored(tmp_path, [ok])
    with ResultStore(db) as store:  # as the version before 2026-12-06 kept it: in the repetition's JSON, twice
        kept = json.loads(store.conn.execute("SELECT result FROM results").fetchone()[0])
        kept["repetitions"][0]["tpot_ns"] = kept["repetitions"][0]["measurement"]["details"]["tpot_ns"] = [7, 8]
        with store.conn:
            store.conn.execute("UPDATE results SET result = ?", (json.dumps(kept),))
            store.conn.execute("DELETE FROM samples WHERE kind = 'tpot_ns'")
            store.conn.execute("DELETE FROM derived")
        assert [store.load_run("run1").results[0].repetitions[0]["tpot_ns"] for _ in range(2)] == [[7, 8], [7, 8]]
