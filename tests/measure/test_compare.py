"""compare's statistics on synthetic samples with known differences, and the matching of two runs' cells."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.compared_runs import (
    CONFIG,
    FIDELITY_OK,
    MACHINE,
    broken_runs,
    cell_samples,
    make_result,
    with_fidelity,
    with_probes,
)

from enginebench.analysis.compare import (
    compare_results,
    compare_runs,
    compare_sides,
    correct,
    judge,
    machine_differences,
)
from enginebench.formats.tables.comparison import gate_line, to_markdown
from enginebench.measure.compare import Ratio, Side, bootstrap_side, closed_loop_ratio_ci, ratio_ci
from enginebench.measure.rates import closed_loop_throughput
from enginebench.store.model import Result, Run


def rates(processes: int, calls: int, trials: int, between: float = 0.01) -> tuple[float, float]:
    """(share of trials where two draws of one distribution are called different, share where a real 5%
    slowdown is found), threshold 0: the CI alone decides."""
    false, found = 0, 0
    for seed in range(trials):
        rng = np.random.default_rng(seed)
        base = cell_samples(rng, processes, calls, between=between)
        same = cell_samples(rng, processes, calls, between=between)
        slower = cell_samples(rng, processes, calls, scale=1.05, between=between)
        lo, hi = ratio_ci(base, same, resamples=300, seed=seed).ci95
        false += not lo <= 1 <= hi
        found += ratio_ci(base, slower, resamples=300, seed=seed).ci95[0] > 1
    return false / trials, found / trials


@pytest.mark.parametrize("calls, max_false, min_found", [
    (20, 0.07, 0.80),  # a slow cell: ≥10 s and ≥10 calls give tens of calls a process
    (40, 0.07, 0.88),
    (2000, 0.07, 0.90),  # a fast cell: thousands of calls, the spread between processes dominates
])
def test_false_positives_stay_at_5_percent_and_a_5_percent_shift_is_found(calls, max_false, min_found):
    # 400 trials: a calibrated 95% interval errs in 5% ± 1.1% (one binomial standard error) of them
    false, found = rates(3, calls, 400)
    assert false <= max_false
    assert found >= min_found


def test_processes_that_differ_more_widen_the_interval_rather_than_raise_false_positives():
    false, found = rates(3, 20, 400, between=0.02)
    assert false <= 0.07
    assert 0.3 < found < 0.8  # a 5% shift is harder to tell from a 2% spread between processes


def test_with_the_gates_5_percent_threshold_two_draws_of_one_distribution_never_regress():
    no_change = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        ratio = ratio_ci(cell_samples(rng, 3, 20), cell_samples(rng, 3, 20), resamples=300, seed=seed)
        no_change += judge(ratio.inverse(), 0.05)[0] == "no significant change"
    assert no_change / 200 >= 0.99


def test_one_process_a_side_is_overconfident_when_processes_differ():
    """Why the command says so when a run has one process per cell: a second process sits elsewhere by ~1%,
    which one process's own calls cannot show."""
    false = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        lo, hi = ratio_ci(cell_samples(rng, 1, 30), cell_samples(rng, 1, 30), resamples=300, seed=seed).ci95
        false += not lo <= 1 <= hi
    assert false / 200 > 0.10


def test_ratio_has_no_interval_for_a_single_value_and_inverts():
    assert ratio_ci([[5.0]], [[4.0, 4.2]]).ci95 is None
    r = ratio_ci([[10.0, 11, 9, 10.5]], [[20.0, 21, 19, 20.5]])
    assert r.value == pytest.approx(2.0, rel=0.05)
    inv = r.inverse()
    assert inv.value == pytest.approx(1 / r.value) and inv.ci95 == pytest.approx((1 / r.ci95[1], 1 / r.ci95[0]))
    assert r.ci95[0] < r.value < r.ci95[1]


def test_judge_needs_the_whole_interval_beyond_the_threshold():
    assert judge(Ratio(1.10, (1.07, 1.13)), 0.05)[0] == "faster"
    assert judge(Ratio(0.90, (0.87, 0.93)), 0.05)[0] == "slower"  # 1/0.93 = 7.5% more time a call: beyond 5%
    verdict, reasons = judge(Ratio(0.97, (0.955, 0.985)), 0.05)  # significant, but maybe within 5%
    assert verdict == "no significant change" and "inside the 5% threshold" in reasons[0]
    assert judge(Ratio(0.97, (0.955, 0.985)), 0.0)[0] == "slower"
    assert "includes 1" in judge(Ratio(1.0, (0.98, 1.02)), 0.0)[1][0]
    assert judge(Ratio(1.0, None), 0.0)[0] == "no significant change"


def test_the_closed_loop_rate_matches_the_stored_figure_and_its_ratio_is_calibrated():
    from enginebench.measure.compare import closed_loop_rate

    def side(rng, scale=1.0):  # 3 processes of 2 workers
        return [cell_samples(rng, 2, 200, scale=scale * np.exp(0.01 * rng.standard_normal()), between=0.0)
                for _ in range(3)]

    base = side(np.random.default_rng(0))
    assert closed_loop_rate(base, 8) == pytest.approx(closed_loop_throughput(base, 8)[0])
    assert closed_loop_ratio_ci(base, [[w / 1.1 for w in ws] for ws in base], 8, 8).value == pytest.approx(1.1)
    false, found = 0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        base, same, faster = side(rng), side(rng), side(rng, scale=1 / 1.05)  # calls 5% shorter
        lo, hi = closed_loop_ratio_ci(base, same, 8, 8, resamples=300).ci95
        false += not lo <= 1 <= hi
        found += closed_loop_ratio_ci(base, faster, 8, 8, resamples=300).ci95[0] > 1
    assert false / 200 <= 0.07
    assert found / 200 >= 0.85


# --- Results and Runs ----------------------------------------------------------------------------------------


def test_latency_cells_compare_medians_and_say_which_is_faster():
    base, new = make_result(seed=1), make_result(seed=2, scale=1 / 1.2)
    c = compare_results(base, new)
    assert c.metric == "median latency" and c.unit == "ms" and not c.higher_is_better
    assert c.base == pytest.approx(base.latency_ms["median"]) and c.new == pytest.approx(new.latency_ms["median"])
    assert c.ratio.value == pytest.approx(c.new / c.base)
    assert c.speedup.value == pytest.approx(1 / c.ratio.value) and c.speedup.value > 1.1
    assert c.verdict == "faster" and c.change().endswith("faster") and c.processes == (3, 3)
    assert compare_results(new, base).verdict == "slower"


def test_results_measured_by_ray_nodes_on_different_machines_say_so():
    base, new = make_result(seed=1), make_result(seed=2)
    assert not any("different machines" in r for r in compare_results(base, new).reasons)
    base.details["node"], new.details["node"] = {"hostname": "node-a"}, {"hostname": "node-b"}
    assert "measured on different machines: node-a → node-b" in compare_results(base, new).reasons


def test_a_machine_that_ran_at_another_speed_in_one_run_is_said_beside_the_cell_and_in_the_gate_line():
    """An A/A pair of a suite (session 18): the throughput cell came out 22% "faster" with no warning of either run
    saying the machine moved, yet the GEMM probes its processes timed said so: 127-133 GFLOP/s beside the base,
    97-189 (median 167) beside the new."""
    steady, moving = [128.8, 131.7, 130.6, 129.1, 133.3, 126.6], [126.6, 188.1, 188.9, 146.6, 97.2, 188.3]
    base = with_probes(make_result(scenario="throughput", workers=2, threads=1, seed=1), steady)
    new = with_probes(make_result(scenario="throughput", workers=2, threads=1, seed=2, scale=1 / 1.22), moving)
    cmp = compare_runs(Run("a", "t", MACHINE, CONFIG, [base]), Run("b", "t", MACHINE, CONFIG, [new]))
    (c,) = cmp.cells
    assert c.verdict == "faster"  # what was measured stays the verdict
    assert c.machine["moved"] and c.machine["unsteady"] == ["new"] and c.machine["change"] == pytest.approx(1.29, abs=0.01)
    assert cmp.machine_moved() == [c] and cmp.to_dict()["machine_moved"] == [c.cell]
    assert ("the machine itself ran 29% faster beside the new run's cell than beside the base's (numpy GEMM probes, "
            "median 130 → 167 GFLOP/s)") in " ".join(c.reasons)
    assert "the machine's speed moved during the new run's cell (GEMM probes 97-189 GFLOP/s)" in c.reasons
    assert "another speed beside 1 of the cells called changed" in gate_line(cmp)
    assert "the machine itself ran 29% faster" in to_markdown(cmp)

    quiet = with_probes(make_result(scenario="throughput", workers=2, threads=1, seed=2, scale=1 / 1.22),
                        [131.0, 133.9, 129.5, 134.0, 128.2, 132.4])  # within 2% of the base's
    cmp = compare_runs(Run("a", "t", MACHINE, CONFIG, [base]), Run("b", "t", MACHINE, CONFIG, [quiet]))
    assert not cmp.cells[0].machine_moved and cmp.machine_moved() == [] and "machine" not in gate_line(cmp)
    assert not any("machine" in r for r in cmp.cells[0].reasons)
    # a 4% move is beyond a 0% threshold but within the probe's own noise: not said either
    near = with_probes(make_result(seed=3), [x * 1.04 for x in steady])
    assert not compare_results(with_probes(make_result(seed=1), steady), near, threshold=0.0).machine_moved
    # without probes on a side (decoders, servers, results stored before probes) nothing is said, nor where two
    # Ray nodes measured the sides: their probes time two machines, which the reasons say apart
    assert compare_results(make_result(seed=1), with_probes(make_result(seed=2), moving)).machine is None
    a, b = with_probes(make_result(seed=1), steady), with_probes(make_result(seed=2), moving)
    a.details["node"], b.details["node"] = {"hostname": "node-a"}, {"hostname": "node-b"}
    assert compare_results(a, b).machine is None
    b.details["node"] = {"hostname": "node-a"}
    assert compare_results(a, b).machine_moved


def test_throughput_cells_are_judged_on_items_per_s():
    base = make_result(scenario="throughput", workers=2, threads=1, batch=8, seed=1)
    new = make_result(scenario="throughput", workers=2, threads=1, batch=8, seed=2, scale=1.15)
    c = compare_results(base, new)
    assert c.metric == "throughput" and c.higher_is_better and c.unit == "items/s"
    assert c.base == pytest.approx(base.throughput["items_per_s"])
    assert c.new == pytest.approx(new.throughput["items_per_s"])
    assert c.verdict == "slower" and c.speedup.value == pytest.approx(c.ratio.value)


def test_decode_cells_are_judged_on_tokens_per_s():
    from enginebench.measure.rates import rate_summary

    def decoder(scale, seed):
        r = make_result(scenario="latency", seed=seed, scale=scale, calls=100)
        r.scenario, r.workload = "generate", "tg32"
        r.decode_tokens_per_s = rate_summary([np.asarray(g) for g in r.process_samples()], 4)
        return r

    base, new = decoder(1.0, 1), decoder(1 / 1.3, 2)  # decode steps 1.3× as fast
    c = compare_results(base, new)
    assert c.metric == "decode tokens/s" and c.unit == "tokens/s"
    assert c.base == pytest.approx(base.decode_tokens_per_s["median"])
    assert c.new == pytest.approx(new.decode_tokens_per_s["median"])
    assert c.ratio.value == pytest.approx(c.new / c.base) and c.verdict == "faster"


def test_results_of_other_kinds_or_not_ok_are_refused():
    with pytest.raises(ValueError, match="cannot compare"):
        compare_results(make_result(), make_result(scenario="throughput", workers=2, threads=1))
    failed = Result(engine="torch", model="minilm", precision="fp32", scenario="latency", workload="titles",
                    batch_size=1, seq_len=16, workers=1, threads=2, status="failed", error="boom")
    with pytest.raises(ValueError, match="failed"):
        compare_results(failed, make_result())


def test_one_process_results_say_their_interval_covers_one_process():
    c = compare_results(make_result(processes=1, seed=1), make_result(seed=2))
    assert c.processes == (1, 3)
    assert any("base: one process" in r for r in c.reasons)
    assert not any("new: one process" in r for r in c.reasons)


def test_runs_match_cells_by_parameters_and_list_the_rest():
    failed = Result(engine="torch", model="minilm", precision="fp32", scenario="latency", workload="titles",
                    batch_size=1, seq_len=16, workers=1, threads=2, status="failed", error="out of memory")
    base = Run("a", "2026-01-01T00:00:00+00:00", MACHINE, CONFIG, [
        make_result(seed=1), make_result(batch=8, seed=3), make_result(engine="torch", seed=5),
        make_result(engine="openvino", seed=7)])
    new = Run("b", "2026-01-02T00:00:00+00:00", MACHINE, CONFIG, [
        make_result(seed=2, scale=1.2, version="1.1"), make_result(batch=8, seed=4), failed,
        make_result(batch=32, seed=6)])
    cmp = compare_runs(base, new)
    assert [(c.cell["engine"], c.cell["batch_size"]) for c in cmp.cells] == [("onnxruntime", 1), ("onnxruntime", 8)]
    assert cmp.cells[0].verdict == "slower" and cmp.cells[1].verdict == "no significant change"
    assert [c["engine"] for c in cmp.only_in_base] == ["openvino"]
    assert [(c["engine"], c["batch_size"]) for c in cmp.only_in_new] == [("onnxruntime", 32)]
    assert cmp.not_compared[0]["cell"]["engine"] == "torch" and "out of memory" in cmp.not_compared[0]["why"]
    assert [c.cell["batch_size"] for c in cmp.regressions()] == [1]
    assert cmp.regressions(threshold=0.5) == []
    assert any("engine version differs: 1.0 → 1.1" in r for r in cmp.cells[0].reasons)
    assert "engine onnxruntime: 1.0, 1.1 → 1.1" not in cmp.version_differences  # base has 1.0 only
    assert "engine onnxruntime: 1.0 → 1.0, 1.1" in cmp.version_differences
    d = cmp.to_dict()
    assert d["regressions"] == [cmp.cells[0].cell] and len(d["cells"]) == 2


def test_a_cell_whose_engine_computed_other_positions_says_it_is_not_the_same_work():
    """A cell's identity holds the workload, not the positions its engine computed: a result stored by a version
    of sentence-transformers' engine that stopped at each batch's longest input matches today's, which pads."""
    def result(positions, seed):
        r = make_result(seed=seed)
        r.details = {**(r.details or {}), "positions_per_item": positions}
        return r

    differs = compare_results(result(14.9, 1), result(16.0, 2))
    assert "token positions computed per input differ: 14.9 → 16.0 (107%): not the same work" in differs.reasons
    assert not any("positions" in r for r in compare_results(result(16.0, 1), result(16.0, 2)).reasons)


def test_machine_and_setup_differences_are_spelled_out():
    other = {**MACHINE, "cpu": "AMD EPYC 9654", "cpu_flags": ["avx2", "avx512f", "avx512_bf16"],
             "logical_cores": 8, "affinity": [0, 1, 2, 3], "python": "3.12.1", "env": {"OMP_NUM_THREADS": "4"},
             "libraries": {"onnxruntime": "1.2", "numpy": "2.0"}}
    lines = machine_differences(MACHINE, other)
    assert "CPU: Intel Xeon 8480 → AMD EPYC 9654" in lines
    assert "logical cores: 16 → 8" in lines
    assert any(line.startswith("CPU flags: +avx512_bf16 -avx512_vnni") for line in lines)
    assert "CPU affinity: 0-15 (16 CPUs) → 0-3 (4 CPUs)" in lines
    assert "Python: 3.11.7 → 3.12.1" in lines
    assert "environment OMP_NUM_THREADS: unset → 4" in lines
    assert machine_differences(MACHINE, dict(MACHINE)) == []
    base = Run("a", "t", MACHINE, CONFIG, [make_result(seed=1)])
    new = Run("b", "t", other, {**CONFIG, "repeat": 1, "stopping_rule": {**CONFIG["stopping_rule"], "duration_s": 1.0}},
              [make_result(seed=2, processes=1)])
    cmp = compare_runs(base, new)
    assert "onnxruntime: 1.0 → 1.2" in cmp.version_differences
    assert "processes per cell (--repeat): 3 → 1" in cmp.setup_differences
    assert any(line.startswith("stopping rule: cells ≥10 s") and "→ cells ≥1 s" in line for line in cmp.setup_differences)
    assert cmp.one_process == ["new"]
    given = compare_runs(base, Run("c", "t", MACHINE, {**CONFIG, "engine_options": {"onnxruntime": {"micro_batch": "8"}}},
                                   [make_result(seed=3)]))
    assert 'engine options onnxruntime: its defaults → {"micro_batch": "8"}' in given.setup_differences


# --- the gate: what a new run cannot vouch for ----------------------------------------------------------------


def test_every_cell_new_cannot_vouch_for_is_a_regression_of_its_kind_listed_first():
    cmp = compare_runs(*broken_runs())
    kinds = [(x.kind, x.cell["engine"]) for x in cmp.issues]
    assert kinds == [("failed", "torch"), ("skipped", "openvino"), ("missing", "tinygrad"),
                     ("fidelity", "ctranslate2"), ("no-ci", "jax")]
    reasons = {x.kind: x.reason for x in cmp.issues}
    assert reasons["failed"] == "new failed: child exited with signal 11"
    assert reasons["skipped"] == "new skipped: fp32 unsupported here"
    assert reasons["missing"] == "measured in base, absent from new (b)"
    assert "min_cosine 0.9999" in reasons["fidelity"] and "fails in new (min_cosine 0.93" in reasons["fidelity"]
    assert "no confidence interval" in reasons["no-ci"]
    assert not cmp.regressions() and cmp.fails_gate()  # nothing is slower, yet the gate fails
    # a cell the base could not measure is no regression: tvm (failed in base) and mlx (failed in both)
    assert {x["cell"]["engine"] for x in cmp.not_compared} >= {"tvm", "mlx"}
    assert not {"tvm", "mlx"} & {x.cell["engine"] for x in cmp.issues}
    d = cmp.to_dict()
    assert list(d)[:4] == ["base", "new", "threshold", "gate"] and d["gate"]["fails"]
    assert [x["kind"] for x in d["gate"]["issues"]] == ["failed", "skipped", "missing", "fidelity", "no-ci"]


def test_allowed_kinds_are_listed_but_pass_the_gate():
    base, new = broken_runs()
    cmp = compare_runs(base, new, allow={"missing", "failed", "skipped", "fidelity"})
    assert [x.kind for x in cmp.blocking()] == ["no-ci"] and cmp.fails_gate()
    assert [x.kind for x in cmp.issues] == ["no-ci", "failed", "skipped", "missing", "fidelity"]  # blocking first
    cmp = compare_runs(base, new, allow={"missing", "failed", "skipped", "fidelity", "no-ci"})
    assert cmp.issues and not cmp.blocking() and not cmp.fails_gate()
    with pytest.raises(ValueError, match="unknown gate kind 'slower'"):
        compare_runs(base, new, allow={"slower"})


def test_fidelity_unchecked_in_new_counts_and_fidelity_never_ok_does_not():
    base = Run("a", "t", MACHINE, CONFIG, [with_fidelity(make_result(seed=1), FIDELITY_OK),
                                           with_fidelity(make_result(batch=8, seed=2), {**FIDELITY_OK, "ok": False})])
    new = Run("b", "t", MACHINE, CONFIG, [make_result(seed=11),
                                          with_fidelity(make_result(batch=8, seed=12), {**FIDELITY_OK, "ok": False})])
    [issue] = compare_runs(base, new).issues
    assert issue.kind == "fidelity" and issue.cell["batch_size"] == 1 and "unchecked in new (not checked)" in issue.reason


# --- many cells, one comparison: Holm's correction ------------------------------------------------------------

def unchanged_cells(rng, cells: int, processes: int = 3) -> list:
    """`cells` comparisons of two draws of one distribution, built like the cells above (3 processes of 20 calls)."""
    return [compare_sides(bootstrap_side(cell_samples(rng, processes, 20)),
                          bootstrap_side(cell_samples(rng, processes, 20))) for _ in range(cells)]


def family_alarms(cells: int, trials: int, correction: str) -> float:
    """The share of simulated comparisons of `cells` unchanged cells, at threshold 0%, that call any cell changed."""
    alarms = 0
    for seed in range(trials):
        family = unchanged_cells(np.random.default_rng(seed), cells)
        correct(family, 0.0, correction)
        alarms += any(c.verdict != "no significant change" for c in family)
    return alarms / trials


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_holm_keeps_the_chance_that_any_of_200_unchanged_cells_is_called_changed_at_5_percent():
    assert family_alarms(200, 10, "none") >= 0.9  # each cell at 95%: about 10 of 200 called changed every time
    assert family_alarms(200, 40, "holm") <= 0.05


@pytest.mark.parametrize("cells, processes", [(20, 3), (200, 5)])
def test_a_30_percent_slower_cell_is_still_caught_among_unchanged_ones(cells, processes):
    """Holm's price is power: the more cells, the wider each one's interval — with 3 processes a cell and 200
    cells, a 30% slowdown is caught in about 3 of 4 comparisons (README); 5 processes a cell catch it always."""
    for seed in range(20):
        rng = np.random.default_rng(seed)
        family = unchanged_cells(rng, cells - 1, processes)
        slow = compare_sides(bootstrap_side(cell_samples(rng, processes, 20)),
                             bootstrap_side(cell_samples(rng, processes, 20, scale=1.3)))
        assert correct(family + [slow], 0.0) == cells
        assert slow.verdict == "slower" and slow.confidence > 0.95 and "Holm's correction over" in slow.reasons[0]
        assert slow.slower_beyond(0.0) and slow.decision.ci95[1] >= slow.speedup.ci95[1]  # judged on a wider interval


def test_a_change_95_percent_sees_but_the_family_does_not_is_no_change_and_says_why():
    def cells():
        still = [compare_sides(Side(1.0, 1e-4, 4.0, 3, 60), Side(1.0, 1e-4, 4.0, 3, 60)) for _ in range(9)]
        return still + [compare_sides(Side(1.0, 1e-4, 4.0, 3, 60), Side(1.04, 1e-4, 4.0, 3, 60))]

    family = cells()
    assert family[-1].verdict == "slower"  # its 95% interval alone lies beyond 1
    assert correct(family, 0.0) == 10
    last = family[-1]
    assert last.verdict == "no significant change" and last.confidence == pytest.approx(0.995)
    assert "but not its 99.5% CI" in last.reasons[0] and "Holm's correction over 10 cells" in last.reasons[0]
    family = cells()
    correct(family, 0.0, "none")
    assert family[-1].verdict == "slower" and family[-1].confidence == 0.95
