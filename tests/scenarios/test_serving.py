"""The serving scenarios (server, offline) driven by MLPerf LoadGen, on a synthetic engine whose calls take a
known time: the SLO verdict, the max-QPS search against queueing theory (M/D/1), the dynamic batcher."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from helpers.fake_engines import SleepFactory
from helpers.queueing import assert_bracketed, md1_max_qps
from helpers.serving import WORKLOAD, server_cell, trace_run

from enginebench.cli import build_parser
from enginebench.config import RunConfig
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Serving
from enginebench.planning import plan_from_config
from enginebench.scenarios.server import MIN_QUERIES_P99, server_figures

pytestmark = pytest.mark.waits  # batcher waits, M/D/1 max-QPS search

pytest.importorskip("mlperf_loadgen")


def test_a_server_that_keeps_up_is_valid():
    arrival = np.arange(1000) * 10.0  # 100 q/s, 2 ms calls: no queue
    f = server_figures(trace_run(arrival, 2.0), 100, 50, 1, 1)
    assert f["valid"] and f["reasons"] == []
    assert f["latency_ms"]["p99"]["value"] == pytest.approx(2.0)
    assert f["achieved_qps"] == pytest.approx(100, rel=0.01)


def test_a_server_that_falls_behind_is_invalid_with_every_reason():
    arrival = np.arange(1000) * 10.0  # 100 q/s into 12 ms calls: the queue grows without bound
    f = server_figures(trace_run(arrival, 12.0, validity="INVALID"), 100, 50, 1, 1)
    assert not f["valid"]
    text = " | ".join(f["reasons"])
    for reason in ("LoadGen: INVALID", "SLO missed", "fell behind", "queue grew"):
        assert reason in text
    assert f["queue"]["last_quarter_mean"] > 5 * f["queue"]["first_quarter_mean"]


def test_too_few_queries_for_a_p99():
    f = server_figures(trace_run(np.arange(100) * 10.0, 2.0), 100, 50, 1, 1)
    assert not f["valid"]
    assert any(f"a p99 needs >= {MIN_QUERIES_P99}" in r for r in f["reasons"])
    assert MIN_QUERIES_P99 == 459  # 0.99**459 <= 0.01: LoadGen's early-stopping minimum at p99


# -- the max-QPS search against M/D/1 ------------------------------------------------------------------------
@pytest.mark.slow
def test_find_max_qps_brackets_its_answer_and_never_beats_md1():
    from enginebench.scenarios.server import run_server

    # An SLO of 10 service times puts the answer at about 0.77 of the capacity; 600 queries per trial (about 6 s
    # at that rate) keep the run over ten relaxation times long at this load (M/D/1 relaxes in about
    # service / (1 - sqrt(load))**2, 0.5 s), and LoadGen's early-stopping p99 from fewer queries is only more
    # conservative, which can lower the answer, never raise it. How close the search lands to M/D/1 is a figure of the
    # machine's quiet (stalls of tens of ms on a shared 2-core host lower it), so it is printed by
    # benchmarks/serving_accuracy.py, not bounded here. What no machine can change is bounded: a busy machine
    # only ever adds latency, so the answer can land low, never over M/D/1 (a load generator that measured from
    # issue instead of arrival would), and the bracket is one valid and one invalid trial at most 20% apart
    # (--search-within 20%: two trials fewer than the default 5%, the same bounds). The target
    # sits above the host's own stalls: with 3 ms calls and 30 ms, stalls of 30-40 ms in 1% of the queries left
    # no rate valid down to 29 q/s on a busy host (2026-12-03), whatever the load.
    call_s, slo_ms = 0.008, 80.0
    rule = StoppingRule(duration_s=1.0, min_samples=600, warmup_s=0.2)
    m, _ = run_server(SleepFactory(call_s), WORKLOAD, server_cell(slo_p99_ms=slo_ms, find_max_qps=True,
                                                                         search_within=0.2), rule)
    search = m.details["find_max_qps"]
    lo, _ = assert_bracketed(search, 0.2)
    # the service the queue really sees: how long a query holds the worker, transfers included (the sleep
    # overshoots); the service distribution is still close to deterministic, so the queue is about M/D/1
    held_s = m.details["serving"]["batching"]["hold_ms_median"] / 1e3
    assert call_s <= held_s < 3 * call_s
    theory = md1_max_qps(held_s, slo_ms / 1e3)
    print(f"found {lo:.1f} q/s, M/D/1 {theory:.1f} q/s (held {held_s * 1e3:.3f} ms)")
    assert lo <= 1.10 * theory, (lo, theory, search["trials"])
    # and it found a rate the queue can serve, not one far below it (a quiet machine lands within 10%; the
    # busiest CI host seen, at 0.63)
    assert lo >= 0.25 * theory, (lo, theory, search["trials"])


# -- the dynamic batcher ---------------------------------------------------------------------------------------
def test_the_batcher_groups_queued_queries_and_holds_none_past_max_wait():
    from enginebench.scenarios.server import run_server

    rule = StoppingRule(duration_s=0.5, min_samples=10, warmup_s=0.1)
    cell = server_cell(qps=300, slo_p99_ms=100, max_batch=4, max_wait_ms=10)
    # with the worker free almost all the time, a query waits for its batch to fill, never past max-wait. A
    # host stall of tens of ms (seen: p99 86 ms once in a whole suite; 28, 16 and 53 ms in three runs in a row
    # beside the parallel lane on 2026-12-07) delays the queries it catches whatever the batcher does, so the
    # bound must hold in one of five runs; a batcher that waits past its deadline breaks it in every run
    p99s = []
    for _ in range(5):
        m, _ = run_server(SleepFactory(0.001), WORKLOAD, cell, rule)
        sizes = m.details["serving"]["batching"]["sizes"]
        assert max(sizes) == 4 and sizes[4] > 0 and sum(n for s, n in sizes.items() if s > 1) > sizes.get(1, 0)
        p99s.append(m.details["serving"]["wait_ms"]["p99"])
        if p99s[-1] <= 10 + 5:
            break
    assert min(p99s) <= 10 + 5, p99s
    assert m.details["serving"]["valid"], m.details["serving"]["reasons"]


def test_offline_fills_every_batch():
    from enginebench.scenarios.offline import run_offline

    rule = StoppingRule(duration_s=0.5, min_samples=10, warmup_s=0.1)
    cell = Cell("sleep", "fp32", "offline", "synthetic", 8, 1, 1, Serving(max_batch=8))
    # 20 ms batches: the harness's gap between two batches (about a ms, more on a busy host) stays small beside
    # them, as it does beside a real engine's batches. A host stall between batches lowers the rate whatever the
    # harness does (seen beside the parallel lane on 2026-12-07: 285 samples/s against 390 from the hold time),
    # so the rate must match in one of three runs; a harness that leaves gaps between batches misses it in all
    ratios = []
    for _ in range(3):
        m, _ = run_offline(SleepFactory(0.02), WORKLOAD, cell, rule)
        f = m.details["serving"]
        assert f["valid"] and f["loadgen"]["validity"] == "VALID"
        assert f["batching"]["mean_size"] > 7.5  # all full but perhaps the last
        ratios.append(f["samples_per_s"] / (8 / (f["batching"]["hold_ms_median"] / 1e3)))
        if abs(ratios[-1] - 1) <= 0.25:
            break
    assert min(abs(r - 1) for r in ratios) <= 0.25, ratios


# -- options ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    ({"scenario": ["server"], "slo_p99": "50"}, "--qps N"),
    ({"scenario": ["server"], "qps": "100"}, "--slo-p99"),
    ({"qps": "100"}, "--scenario server"),
    ({"scenario": ["offline"], "qps": "100"}, "--scenario server"),
    ({"scenario": ["server"], "qps": "100", "slo_p99": "50", "max_wait": "5"}, "--max-batch"),
    ({"scenario": ["server"], "qps": "-3", "slo_p99": "50"}, "--qps"),
    ({"scenario": ["server"], "qps": "10", "slo_p99": "soon"}, "--slo-p99"),
    ({"scenario": ["server"], "qps": "10", "slo_p99": "50", "search_within": "10%"}, "add --find-max-qps"),
    ({"scenario": ["server"], "find_max_qps": True, "slo_p99": "50", "search_within": "0"}, "--search-within"),
    ({"scenario": ["server"], "find_max_qps": True, "slo_p99": "50", "search_within": "150%"}, "at most 100"),
    ({"scenario": ["server"], "find_max_qps": True, "slo_p99": "50", "search_within": "wide"}, "e.g. --search"),
])
def test_bad_serving_options_are_refused_before_measuring(options, message):
    with pytest.raises(UsageError, match=message.replace("-", r"\-")):
        plan_from_config(RunConfig.from_keywords(**options))


@pytest.mark.slow
def test_a_server_run_end_to_end_keeps_loadgens_logs():
    """Through the API and a child process: the Result's serving figures, LoadGen's summary and the table."""
    from helpers import fake_engines

    from enginebench import api
    from enginebench.formats.tables.encoder import table_rows

    saved = dict(os.environ)
    os.environ.update(fake_engines.env())
    try:
        run = api.run("minilm", db=None, engines="fault", scenario="server", workload="titles", qps="100",
                      slo_p99="250", duration="0.5s", warmup="0.1s", repeat="1", workers="1",
                      option=["fault.call_ms=2"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    r = run.results[0]
    assert r.status == "ok", r.error
    # 2 ms calls at 100 q/s under a 250 ms p99: the plumbing is tested here, not how quiet the host is (a 50 ms
    # target failed once in the serial pass)
    assert r.serving["settings"]["qps"] == 100 and r.serving["slo_p99_ms"] == 250
    assert r.verdict["ok"] and r.serving["loadgen"]["validity"] == "VALID", (r.verdict, r.serving.get("reasons"))
    assert "Result is : VALID" in r.details["loadgen"]["summary"]
    assert r.details["loadgen"]["log"]["effective_target_qps"] == 100
    assert len(r.samples) == r.serving["queries"] >= MIN_QUERIES_P99
    headers, rows, constants = table_rows(run.results)
    assert rows[0][-1] == "VALID" and constants["serving"] == "100 q/s · p99 ≤ 250 ms"
    from enginebench.formats.frame import export_frame

    row = export_frame(run).iloc[0]  # the CSV and Parquet exports: the rates and targets in columns
    assert (row["target_qps"], row["slo_p99_ms"], row["max_batch"]) == (100, 250, 1) and row["loadgen_valid"]
    assert row["achieved_qps"] == pytest.approx(r.serving["achieved_qps"]) and pd.isna(row["max_qps"])


def test_the_search_stops_when_the_calls_alone_miss_the_target():
    from enginebench.scenarios.server import find_max_qps

    def trial(qps):  # every rate: p99 60 ms against 50, with no queueing to speak of
        return {"valid": False, "achieved_qps": qps, "slo_p99_ms": 50.0, "reasons": ["SLO missed"],
                "latency_ms": {"p99": {"value": 60.0}}, "wait_ms": {"p99": 1.0}}

    search, best = find_max_qps(trial, 100.0)
    assert best is None and len(search.trials) == 1 and "the calls alone miss the target" in search.stopped


def test_search_within_sets_where_the_search_stops_and_a_wider_bracket_costs_fewer_trials():
    from enginebench.scenarios.server import SEARCH_TOLERANCE, find_max_qps

    def trial(qps):  # VALID up to 137 q/s
        ok = qps <= 137
        return {"valid": ok, "achieved_qps": qps, "slo_p99_ms": 50.0, "reasons": [] if ok else ["SLO missed"],
                "latency_ms": {"p99": {"value": 40.0 if ok else 80.0}}, "wait_ms": {"p99": 30.0}}

    narrow, _ = find_max_qps(trial, 100.0)
    wide, _ = find_max_qps(trial, 100.0, 0.25)
    for search, tolerance in ((narrow, SEARCH_TOLERANCE), (wide, 0.25)):
        d = search.to_dict()
        lo, hi = d["bracket"]
        assert lo <= 137 < hi <= lo * (1 + tolerance) and d["tolerance"] == tolerance
    assert len(wide.trials) < len(narrow.trials)
    # from the command line's percent to the cell, and into its key only when given
    config = RunConfig.from_cli(build_parser().parse_args(
        ["run", "--engine", "torch", "--scenario", "server", "--find-max-qps", "--slo-p99", "50",
         "--search-within", "25%", "--workload", "titles", "--batch-size", "1"]))
    assert config.serving.search_within_pct == 25 and "25%" in config.to_argv()
    (cell,) = {c.serving for c in plan_from_config(config).cells}
    assert cell.search_within == 0.25 and cell.to_dict()["search_within"] == 0.25
    assert "search_within" not in Serving(find_max_qps=True).to_dict()  # earlier cells keep their keys


def test_loadgens_early_stopping_advice_is_read_only_when_nothing_else_failed():
    from enginebench.scenarios.server import more_queries_needed

    said = (" * Run unsuccessful.\n * Processed 459 queries.\n * Would need to run at least 542 more queries,\n"
            " with the run being successful if every additional\n query were under latency.")
    unsure = {"validity": "INVALID", "early_stopping_met": False, "perf_constraints_met": True,
              "min_duration_met": True, "min_queries_met": True, "early_stopping_result": said}
    assert more_queries_needed(unsure, []) == 542
    assert more_queries_needed(unsure, ["SLO missed: p99 60 ms from arrival > 50 ms"]) is None
    assert more_queries_needed({**unsure, "perf_constraints_met": False}, []) is None


def test_a_rate_left_unsure_by_early_stopping_is_run_again_with_the_queries_loadgen_asks_for():
    from enginebench.scenarios.server import find_max_qps

    calls = []

    def trial(qps, min_queries=None):  # up to 120 q/s meets the target; below 100 even a short run is sure of it
        calls.append((qps, min_queries))
        met = qps <= 120
        sure = met and (min_queries is not None or qps < 100)
        return {"valid": sure, "achieved_qps": qps, "queries": min_queries or 459, "slo_p99_ms": 50.0,
                "latency_ms": {"p99": {"value": 40.0 if met else 80.0}}, "wait_ms": {"p99": 30.0},
                "reasons": [] if sure else ["LoadGen: INVALID"], "more_queries": 542 if met and not sure else None}

    search, best = find_max_qps(trial, 100.0)
    assert (100.0, 459 + 542) in calls  # run again at the same rate, with LoadGen's count
    assert best is not None and 100 <= search.lo <= 120 < search.hi
    assert any(t["queries"] == 1001 and t["valid"] for t in search.trials)
