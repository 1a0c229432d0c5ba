"""What a LoadGen user checks in enginebench's serving figures: each repetition and each search trial runs its
own arrival schedule (seeds recorded), LoadGen's own percentiles from the scheduled arrival are the primary
figures, offline counts what LoadGen completed, and a search over repetitions reports an interval."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from helpers.fake_engines import SleepFactory
from helpers.measurements import measurement, two_engine_plan
from helpers.serving import WORKLOAD, prompt_set, server_cell, trace_run

from enginebench.execution.messages import Done, Measured, Started, TrialStarted
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Serving

pytestmark = pytest.mark.waits  # LoadGen runs judged on latency percentiles

pytest.importorskip("mlperf_loadgen")

QUICK = StoppingRule(duration_s=0.5, min_samples=10, warmup_s=0.1)


# -- seeds -----------------------------------------------------------------------------------------------------
def test_loadgen_seeds_differ_by_repetition_and_trial_and_are_reproducible():
    from enginebench.scenarios.server import loadgen_seeds

    seen = {tuple(loadgen_seeds(0, r, t).values()) for r in range(3) for t in range(4)}
    assert len(seen) == 12
    assert loadgen_seeds(7, 1, 2) == loadgen_seeds(7, 1, 2)
    assert loadgen_seeds(7, 1, 2) != loadgen_seeds(8, 1, 2)  # --seed still chooses the schedules
    assert set(loadgen_seeds(0, 0, 0)) == {"schedule_rng_seed", "qsl_rng_seed", "sample_index_rng_seed"}


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_two_repetitions_of_a_server_cell_run_with_other_seeds_recorded_as_used():
    from enginebench.scenarios.server import run_server

    cell = server_cell(qps=200, slo_p99_ms=100)
    runs = [run_server(SleepFactory(0.001), WORKLOAD, cell, QUICK, repetition=r)[0] for r in (0, 1)]
    used = [m.details["loadgen"]["log"]["effective_schedule_rng_seed"] for m in runs]
    assert used[0] != used[1]
    assert [m.details["serving"]["seeds"]["schedule_rng_seed"] for m in runs] == used


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_the_same_seeds_replay_the_same_arrivals_and_other_seeds_do_not():
    """Why the seeds must vary: LoadGen's schedule is a function of them."""
    from enginebench.scenarios.loadgen_sut import WorkerPool, run_loadgen
    from enginebench.scenarios.server import loadgen_seeds

    pool = WorkerPool(SleepFactory(0.001), WORKLOAD.pool, 1, 1, 0.1)
    try:
        pool.start()
        gaps = []
        for seeds in (loadgen_seeds(0, 0, 0), loadgen_seeds(0, 0, 0), loadgen_seeds(0, 1, 0)):
            with tempfile.TemporaryDirectory() as outdir:
                run = run_loadgen(pool, scenario="server", max_batch=1, max_wait_ms=0.0, outdir=outdir,
                                  min_duration_s=0.3, min_queries=100, seeds=seeds, qps=50, slo_ms=100)
            gaps.append(np.diff(np.sort(run.trace.arrival_ns)[:100]) / 1e6)
    finally:
        pool.close()
    # gaps of 20 ms on average: a busy machine's late issues (a few ms) leave the same schedule recognisable
    same, other = np.corrcoef(gaps[0], gaps[1])[0, 1], np.corrcoef(gaps[0], gaps[2])[0, 1]
    assert same > 0.8 and abs(other) < 0.5, (same, other)


def test_each_repetition_knows_its_number_in_the_measuring_process(titles, minilm):
    """What seeds LoadGen apart per repetition reaches the child: the job carries its repetition."""

    from enginebench.execution.local import LocalLauncher

    schedule = LocalLauncher(two_engine_plan(titles, minilm, repeat=3)).schedule()
    assert [{job.repetition for job in jobs} for jobs in schedule] == [{0}, {1}, {2}]


# -- LoadGen's own percentiles, from the scheduled arrival --------------------------------------------------
def _late_issue_run(loadgen_p99_ms: float):
    """A server that keeps up by enginebench's own stamp (2 ms calls, no queue), while LoadGen, counting from
    the scheduled arrival, saw each query issued late: its percentiles are higher."""

    run = trace_run(np.arange(1000) * 10.0, 2.0)
    run.log.update({"result_50.00_percentile_latency_ns": 4e6, "result_90.00_percentile_latency_ns": 9e6,
                    "result_99.00_percentile_latency_ns": loadgen_p99_ms * 1e6})
    return run


def test_loadgens_percentiles_from_scheduled_arrival_are_the_primary_figures():
    from enginebench.scenarios.server import server_figures

    f = server_figures(_late_issue_run(30.0), 100, 50, 1, 1)
    assert [f["latency_ms"][q]["value"] for q in ("p50", "p90", "p99")] == [4.0, 9.0, 30.0]
    assert f["percentiles_from"] == "LoadGen's scheduled arrival"
    # enginebench's own stamp, with its bootstrap CI, beside them
    assert f["issue_latency_ms"]["p99"]["value"] == pytest.approx(2.0)
    assert f["issue_latency_ms"]["p99"]["ci95"] is not None
    assert f["valid"]


def test_the_slo_verdict_judges_loadgens_p99_not_the_issue_callbacks():
    from enginebench.scenarios.server import server_figures

    f = server_figures(_late_issue_run(60.0), 100, 50, 1, 1)  # own p99 2 ms, LoadGen's 60 ms: over 50
    assert not f["valid"]
    assert any("SLO missed: p99 60 ms" in r and "scheduled arrival" in r for r in f["reasons"]), f["reasons"]


def test_a_real_server_run_shows_what_loadgen_counted():
    from enginebench.scenarios.server import run_server

    m, _ = run_server(SleepFactory(0.002), WORKLOAD, server_cell(qps=100, slo_p99_ms=100), QUICK)
    f, log = m.details["serving"], m.details["loadgen"]["log"]
    assert f["latency_ms"]["p99"]["value"] == log["result_99.00_percentile_latency_ns"] / 1e6
    assert f["latency_ms"]["p50"]["value"] == log["result_50.00_percentile_latency_ns"] / 1e6
    assert f["issue_latency_ms"]["p99"]["ci95"] is not None


def _served_result(p99s_ms: list[float], qps_list=None):
    """A server cell's Result built from processes whose LoadGen p99s were `p99s_ms`."""
    from enginebench.scenarios.base import Measurement
    from enginebench.scenarios.server import server_figures
    from enginebench.store.derive import build_result

    measured = []
    for r, p99 in enumerate(p99s_ms):
        run = _late_issue_run(p99)
        f = server_figures(run, 100, 50, 1, 1)
        m = Measurement(worker_samples=[run.trace.latency_ns], items_per_call=1, tokens_per_item=8.0, load_s=0.1,
                        peak_rss_mb=10.0, executed_precision="fp32", wall_s=10.0, details={"serving": f})
        measured.append((r, m))
    cell = server_cell(qps=100, slo_p99_ms=50)
    return build_result(cell, measured, model="m", seq_len=8, engine_version="1", engine_options={}, details={})


def test_over_processes_loadgens_percentiles_get_an_interval_over_the_processes():
    r = _served_result([20.0, 24.0, 30.0])
    p99 = r.serving["latency_ms"]["p99"]
    assert 20.0 < p99["value"] < 30.0 and p99["ci95"][0] < 20.0 < 30.0 < p99["ci95"][1]
    assert r.serving["percentiles_from"] == "LoadGen's scheduled arrival"
    assert r.serving["issue_latency_ms"]["p99"]["value"] == pytest.approx(2.0)  # pooled over the processes


def test_a_server_row_shows_loadgens_figures_and_no_n1_label_over_three_processes():
    from enginebench.formats.tables.encoder import table_rows

    headers, rows, _ = table_rows([_served_result([30.0])])
    row = dict(zip(headers, rows[0]))
    assert row["p99 (ms)"] == "30" and row["median (ms)"] == "4"  # LoadGen's, which keeps no CI
    headers, rows, _ = table_rows([_served_result([20.0, 24.0, 30.0])])
    row = dict(zip(headers, rows[0]))
    assert "(n=1)" not in " ".join(rows[0]), row
    assert "±" in row["items/s"] and "±" in row["p99 (ms)"]


def test_the_servers_note_says_where_its_percentiles_count_from_with_the_own_breakdown_beside():
    from enginebench.formats.tables.encoder import serving_note

    note = serving_note(_served_result([30.0]))
    assert "from LoadGen's scheduled arrival" in note
    assert "from enginebench's issue callback: p50 2, p99 2" in note and "wait p99" in note


# -- offline: the items LoadGen completed over its own clock --------------------------------------------------
def test_offline_items_per_s_are_the_samples_loadgen_completed_over_its_clock():
    """Batches of 8 from a pool the run does not fill evenly: a closed loop over the calls would count every
    batch as full and leave out the transfer to the worker."""
    from enginebench.scenarios.offline import run_offline
    from enginebench.store.derive import build_result

    cell = Cell("sleep", "fp32", "offline", "synthetic", 8, 1, 1, Serving(max_batch=8))
    measured = [(r, run_offline(SleepFactory(0.004), WORKLOAD, cell, QUICK, repetition=r)[0]) for r in (0, 1)]
    logs = [m.details["loadgen"]["log"] for _, m in measured]
    r = build_result(cell, measured, model="m", seq_len=8, engine_version="1", engine_options={}, details={})
    rates = [log["result_samples_per_second"] for log in logs]
    assert min(rates) <= r.throughput["items_per_s"] <= max(rates)
    lo, hi = r.throughput["ci95"]
    assert lo <= r.throughput["items_per_s"] <= hi
    for _, m in measured:  # and no faster than the calls could go, transfers left out, batches counted as served
        b = m.details["serving"]["batching"]
        served = sum(size * n for size, n in b["sizes"].items())
        assert m.details["serving"]["samples_per_s"] <= served / (b["batches"] * 0.004)


# -- --find-max-qps over repetitions --------------------------------------------------------------------------
def _searched_result(brackets: list[tuple[float, float]]):
    """A --find-max-qps cell's Result from one independent search per process, each ending in `bracket`."""
    from enginebench.scenarios.base import Measurement
    from enginebench.scenarios.server import server_figures
    from enginebench.store.derive import build_result

    measured = []
    for r, (lo, hi) in enumerate(brackets):
        run = _late_issue_run(20.0)
        f = server_figures(run, lo, 50, 1, 1)
        search = {"max_qps": lo, "bracket": [lo, hi], "tolerance": 0.05, "stopped": None,
                  "trials": [{"qps": lo, "valid": True}, {"qps": hi, "valid": False}]}
        m = Measurement(worker_samples=[run.trace.latency_ns], items_per_call=1, tokens_per_item=8.0, load_s=0.1,
                        peak_rss_mb=10.0, executed_precision="fp32", wall_s=10.0,
                        details={"serving": f, "find_max_qps": search})
        measured.append((r, m))
    cell = server_cell(slo_p99_ms=50, find_max_qps=True)
    return build_result(cell, measured, model="m", seq_len=8, engine_version="1", engine_options={}, details={})


def test_the_max_rate_over_repetitions_has_an_interval_over_their_independent_searches():
    r = _searched_result([(380.0, 395.0), (400.0, 415.0), (420.0, 436.0)])
    search = r.serving["find_max_qps"]
    assert [s["max_qps"] for s in search["searches"]] == [380.0, 400.0, 420.0]  # every repetition's kept
    assert 380.0 < search["max_qps"] < 420.0
    lo, hi = search["max_qps_ci95"]
    assert lo < 380.0 and hi > 420.0


def test_a_search_shows_its_bracket_as_a_bracket_and_searches_their_interval():
    from enginebench.store.labels import serving_label

    one = serving_label(_searched_result([(392.0, 402.0)]))
    assert "392" in one and "bracket 392–402" in one, one
    three = serving_label(_searched_result([(380.0, 395.0), (400.0, 415.0), (420.0, 436.0)]))
    assert "over 3 searches" in three and "±" in three, three
    assert max(len(one), len(three)) <= 80


# -- the timeout of a search --------------------------------------------------------------------------------
def test_each_loadgen_run_of_a_cell_tells_the_parent_how_long_it_will_take():
    from enginebench.scenarios.server import run_server

    heard = []
    cell = server_cell(qps=200, slo_p99_ms=100)
    run_server(SleepFactory(0.001), WORKLOAD, cell, QUICK, on_trial=heard.append)
    assert heard == [pytest.approx(459 / 200)]  # LoadGen runs until 459 queries at 200 q/s, past its 0.5 s


def test_a_search_is_timed_per_loadgen_run_each_allowed_its_expected_length(titles, minilm):
    """A search's trials each take their minimum count of queries at their rate: the cell's --timeout is
    counted afresh from each trial's start, beyond the length the trial expects, not over the whole search."""
    import time

    from enginebench.execution.local import LocalLauncher

    plan = two_engine_plan(titles, minilm, repeat=1)
    plan.timeout_s = 0.2
    orch = LocalLauncher(plan)
    seen = []

    def child_messages(job, timed_out):
        for index, _ in job.cells:
            yield Started(index)
            if not seen:
                for expected_s in (0.6, 0.6):  # two trials, each longer than --timeout, within their length
                    yield TrialStarted(index, expected_s)
                    time.sleep(0.5)
                    seen.append(timed_out())
                yield TrialStarted(index, 0.0)
                time.sleep(0.3)
                seen.append(timed_out())
            yield Measured(index, measurement(np.full(12, 1_000_000)))
        yield Done()

    orch._child_messages = child_messages
    orch._references = lambda: None
    orch.run(lambda index, result: None)
    assert seen[:2] == [None, None]
    assert seen[2] is not None and "raise --timeout" in seen[2].reason, seen[2]


@pytest.mark.slow
def test_a_decoder_server_run_says_its_length_and_uses_its_repetitions_seeds():
    from helpers.fake_engines import SleepDecoderFactory

    from enginebench.scenarios.decoder_server import run_decoder_server
    from enginebench.scenarios.server import loadgen_seeds

    heard = []
    prompts = prompt_set()
    serving = Serving(qps=150, slo_ttft_ms=200.0, slo_tpot_ms=50.0)
    cell = Cell("sleep", "fp32", "server", prompts.spec.name, 1, 1, 1, serving)
    m = run_decoder_server(SleepDecoderFactory(0.001, 0.0005), prompts, cell, QUICK, repetition=2,
                           on_trial=heard.append)
    assert heard == [pytest.approx(459 / 150)]
    assert m.details["serving"]["seeds"] == loadgen_seeds(0, 2, 0)
    assert m.details["loadgen"]["log"]["effective_schedule_rng_seed"] == loadgen_seeds(0, 2, 0)["schedule_rng_seed"]


def test_a_decoders_ttft_and_tpot_are_loadgens_from_the_scheduled_arrival():
    from enginebench.scenarios.decoder_server import TokenRun, TokenTrace, decoder_server_figures

    n, gen = 600, 6
    arrival = np.arange(n, dtype=np.int64) * 50_000_000  # 20 req/s, each served alone in 10 ms + 5 x 2 ms
    first = arrival + 10_000_000
    done = first + (gen - 1) * 2_000_000
    trace = TokenTrace(arrival, arrival, first, done, np.ones(n, np.int64), np.zeros(n, np.int64))
    log = {"result_validity": "VALID", "result_scheduled_samples_per_sec": 20.0}
    for q, ttft, tpot in ((50, 30, 2.5), (90, 250, 3), (99, 400, 4)):  # LoadGen saw them issued late
        log[f"result_first_token_{q}.00_percentile_latency_ns"] = ttft * 1e6
        log[f"result_time_per_output_token_{q}.00_percentile_ns"] = tpot * 1e6
    serving = Serving(qps=20, slo_ttft_ms=300.0, slo_tpot_ms=50.0)
    f = decoder_server_figures(TokenRun(trace, {}, log, ""), 20, serving, gen)
    assert f["ttft_ms"]["p99"]["value"] == 400.0 and f["tpot_ms"]["p50"]["value"] == 2.5
    assert f["issue_ttft_ms"]["p99"]["value"] == pytest.approx(10.0)
    assert not f["valid"] and any("TTFT p99 400 ms" in r for r in f["reasons"]), f["reasons"]
    assert f["hopeless"] is None  # issued late, not a prefill too slow: a search goes on down


def test_the_note_says_what_loadgen_said_of_every_repetition():
    from enginebench.formats.tables.encoder import serving_note

    note = serving_note(_served_result([20.0, 60.0]))  # LoadGen VALID for both, but the second misses 50 ms
    r = _served_result([20.0, 60.0])
    r.serving["repetitions"][1]["loadgen"] = {"validity": "INVALID"}
    assert "LoadGen VALID, INVALID" in serving_note(r), serving_note(r)
    assert "LoadGen VALID, VALID" in note


def test_searches_that_found_no_valid_rate_are_counted_not_averaged():
    from enginebench.display import max_rate

    none = {"max_qps": None, "bracket": [None, 50.0]}
    one = {"max_qps": 392.0, "bracket": [392.0, 402.0]}
    assert max_rate({**one, "searches": [none, one, none]}) == "392 (bracket 392–402; 1 of 3 searches VALID)"
    assert max_rate({**none, "searches": [none, none]}) == "none VALID"
    two = {**one, "max_qps_ci95": [300.0, 500.0], "searches": [one, {**one, "max_qps": 400.0}, none]}
    assert max_rate(two).endswith("over 2 of 3 searches")


def test_a_late_issue_is_not_taken_for_calls_too_slow_to_meet_the_target():
    """LoadGen's p99 over the target while enginebench's own, from issue, is well within it with little
    waiting: the delay is in issuing (a busy machine, the GIL), which a lower rate can relieve, so the search
    must go on down rather than stop as if the calls alone missed."""
    from enginebench.scenarios.server import calls_alone_miss, server_figures

    f = server_figures(_late_issue_run(60.0), 100, 50, 1, 1)  # own p99 2 ms, waits ~0
    assert not f["valid"] and calls_alone_miss(f) is None
    slow = server_figures(_late_issue_run(60.0), 100, 1.5, 1, 1)  # 2 ms calls against 1.5 ms: hopeless
    assert calls_alone_miss(slow) is not None
