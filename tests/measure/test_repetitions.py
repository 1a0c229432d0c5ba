"""Independent repetitions: the CI over processes, the verdict across processes, storage apart, the shuffled order."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.measurements import measurement, two_engine_plan

from enginebench.execution.local import LocalLauncher
from enginebench.execution.messages import CellFailed, Done, Measured, Started
from enginebench.execution.records import CellHistory
from enginebench.measure.stats import bootstrap_ci, median_over_processes, summarize
from enginebench.measure.timing import StoppingRule
from enginebench.measure.verdict import repetitions_disagree, verdict
from enginebench.plan import Cell, Plan
from enginebench.store.database import ResultStore
from enginebench.store.derive import build_result


def _process(rng, median_ns: float, n: int = 400) -> np.ndarray:
    return (median_ns * (1 + 0.02 * rng.standard_normal(n))).astype(np.int64)


CONTEXT = dict(model="m", seq_len=16, engine_version="1", engine_options={}, details={})
CELL = Cell("onnxruntime", "fp32", "latency", "titles", 1, 1, 1)


def test_the_ci_over_processes_is_wider_when_processes_differ():
    rng = np.random.default_rng(0)
    shifted = [_process(rng, m) for m in (1.00e6, 1.06e6, 0.95e6)]  # each process sits somewhere else
    pooled = np.concatenate(shifted)
    naive = bootstrap_ci(pooled)
    point, (lo, hi) = median_over_processes(shifted)
    assert (hi - lo) > 3 * (naive[1] - naive[0])  # the pooled bootstrap hides the between-process spread
    medians = [np.median(g) for g in shifted]
    assert point == pytest.approx(np.exp(np.mean(np.log(medians))))  # the geometric mean of the processes' medians
    assert lo < min(medians) and hi > max(medians)  # t with 2 df: beyond [fastest, slowest], as 3 processes need
    same = [_process(rng, 1.0e6) for _ in range(3)]  # no shift: the processes' medians differ by their noise alone
    _, (lo2, hi2) = median_over_processes(same)
    assert (hi2 - lo2) < (hi - lo) / 3
    assert lo2 <= 1.0e6 <= hi2


def test_one_sample_has_no_ci_and_the_verdict_says_so():
    assert bootstrap_ci(np.array([5.0])) is None
    s = summarize([5.0])
    assert s.ci95 is None and s.to_dict()["ci95"] is None
    assert any("no confidence interval" in r for r in verdict([5_000_000])["reasons"])
    result = build_result(CELL, [(0, measurement([5_000_000]))], **CONTEXT)
    assert result.latency_ms["ci95"] is None and result.throughput["ci95"] is None
    assert not result.verdict["ok"]
    from enginebench.formats.tables.encoder import table_rows

    _, rows, _ = table_rows([result])
    assert "(n=1)" in " ".join(rows[0]) and "± 0" not in " ".join(rows[0])


def test_the_verdict_warns_when_repetitions_disagree_widely_and_notes_a_small_gap():
    rng = np.random.default_rng(1)
    apart = [_process(rng, 1.0e6), _process(rng, 1.20e6)]
    assert "repetitions disagree" in repetitions_disagree(apart)
    assert repetitions_disagree([_process(rng, 1.0e6), _process(rng, 1.0e6)]) is None
    result = build_result(CELL, [(0, measurement(apart[0])), (1, measurement(apart[1]))], **CONTEXT)
    assert any("repetitions disagree" in r for r in result.verdict["reasons"])
    assert result.latency_ms["processes"] == 2
    # 5% apart: the processes differ beyond their own noise, but the CI over processes covers it: a note
    near = [_process(rng, 1.0e6), _process(rng, 1.05e6)]
    assert "repetitions disagree" in repetitions_disagree(near)
    result = build_result(CELL, [(0, measurement(near[0])), (1, measurement(near[1]))], **CONTEXT)
    assert not any("repetitions disagree" in r for r in result.verdict["reasons"])
    assert any("repetitions disagree" in n for n in result.details["notes"])
    lo, hi = result.latency_ms["ci95"]
    assert lo <= 1.0 and hi >= 1.05 * 0.98  # the CI spans both processes' medians (ms)


def test_a_ci_wide_for_want_of_processes_says_so_and_names_the_fix():
    rng = np.random.default_rng(3)
    three = [(r, measurement(_process(rng, m))) for r, m in enumerate((1.0e6, 1.05e6, 0.97e6))]
    result = build_result(CELL, three, **CONTEXT)
    note = next(n for n in result.details["notes"] if "95% CI over 3 processes" in n)
    lo, hi = result.latency_ms["ci95"]
    assert f"±{np.sqrt(hi / lo) - 1:.1%}" in note and "--repeat 5 narrows it" in note
    assert result.verdict["ok"]  # a note, not a warning: the interval is honest, only wide
    # five processes, or three that agree: nothing to say
    five = [(r, measurement(_process(rng, m))) for r, m in enumerate((1.0e6, 1.05e6, 0.97e6, 1.02e6, 0.99e6))]
    quiet = [(r, measurement(_process(rng, 1.0e6))) for r in range(3)]
    for measured in (five, quiet):
        notes = build_result(CELL, measured, **CONTEXT).details.get("notes", [])
        assert not any("95% CI over" in n for n in notes)


def test_the_wide_interval_note_names_the_figure_the_cell_is_judged_on():
    """A throughput cell is read by its items/s, a decoder's by its tokens/s: the note names that figure, with
    its own interval's width."""
    rng = np.random.default_rng(3)
    spread = (1.0e6, 1.05e6, 0.97e6)
    workers = Cell("onnxruntime", "fp32", "throughput", "titles", 1, 2, 1)
    result = build_result(workers, [(r, measurement(_process(rng, m), workers=2)) for r, m in enumerate(spread)],
                          **CONTEXT)
    (note,) = [n for n in result.details["notes"] if "95% CI over 3 processes" in n]
    lo, hi = result.throughput["ci95"]
    assert note.startswith("items/s: ") and f"±{np.sqrt(hi / lo) - 1:.1%}" in note
    decoder = Cell("llamacpp", "q8_0", "generate", "tg16", 1, 1, 2)
    result = build_result(decoder, [(r, measurement(_process(rng, m))) for r, m in enumerate(spread)], **CONTEXT)
    assert any(n.startswith("tokens/s: 95% CI over 3 processes") for n in result.details["notes"])


def test_a_cell_with_spiky_calls_says_its_items_per_s_interval_reaches_lower():
    rng = np.random.default_rng(5)
    steady = [_process(rng, m, 300) for m in (1.0e6, 1.02e6, 0.99e6)]
    spiky = [np.where(rng.random(p.size) < 0.04, 3 * p, p) for p in steady]
    notes = []
    for processes in (steady, spiky):
        result = build_result(CELL, [(r, measurement(p)) for r, p in enumerate(processes)], **CONTEXT)
        notes.append([n for n in result.details.get("notes", []) if "spikes" in n])
    assert notes[0] == [] and len(notes[1]) == 1
    share = sum(int((p > 2 * np.median(p)).sum()) for p in spiky) / sum(p.size for p in spiky)
    assert notes[1][0].startswith(f"items/s: {share:.1%} of calls took over 2× ") and "t's 99% quantile" in notes[1][0]


def test_repetitions_are_stored_apart_and_every_figure_rebuilds(tmp_path):
    rng = np.random.default_rng(2)
    measured = [(r, measurement(_process(rng, (1 + 0.03 * r) * 1e6, 300), workers=2)) for r in range(3)]
    result = build_result(CELL, measured, **CONTEXT)
    with ResultStore(tmp_path / "r.db") as store:
        from enginebench.store.model import Run

        store.add_run(Run("run1", "2026-01-01T00:00:00+00:00", {}, {}))
        store.add_result("run1", build_result(CELL, measured[:1], **CONTEXT), cell=0)  # after repetition 1 ...
        store.add_result("run1", result, cell=0)  # ... replaced after repetition 3, never duplicated
        loaded = store.load_run("run1").results
    assert len(loaded) == 1
    back = loaded[0]
    assert back == result
    for rep, (_, m) in zip(back.repetitions, measured):
        assert [list(w) for w in rep["worker_samples"]] == [w.tolist() for w in m.worker_samples]
    rebuilt = summarize(None, [np.asarray(g) / 1e6 for g in back.process_samples()]).to_dict()
    assert rebuilt == back.latency_ms
    again = build_result(CELL, [(rep["index"], measurement(np.concatenate(rep["worker_samples"]), workers=2))
                                for rep in back.repetitions], **CONTEXT)
    assert again.throughput["items_per_s"] == pytest.approx(back.throughput["items_per_s"])


def _scripted(orch: LocalLauncher, fail: set[tuple[int, int]] = frozenset()):
    """Children that measure every cell at once; (child number, cell index) pairs in `fail` raise instead."""
    started: list[list[int]] = []

    def child_messages(job, timed_out):
        started.append([index for index, _ in job.cells])
        for index, _ in job.cells:
            yield Started(index)
            if (len(started) - 1, index) in fail:
                yield CellFailed(index, "RuntimeError: boom")
            else:
                yield Measured(index, measurement(np.full(12, 1_000_000 + 1000 * index)))
        yield Done()

    orch._child_messages = child_messages
    orch._references = lambda: None
    return started


def test_each_repetition_is_a_fresh_child_in_a_seeded_shuffled_order(titles, minilm):
    orch = LocalLauncher(two_engine_plan(titles, minilm, repeat=3))
    started = _scripted(orch)
    emitted: list[tuple[int, object]] = []
    orch.run(lambda index, result: emitted.append((index, result)))
    assert len(started) == 6  # 2 jobs (engines) x 3 repetitions, each a new child
    assert orch.deliveries() == len(emitted) == 12
    finals = {index: result for index, result in emitted}
    assert all(len(r.repetitions) == 3 for r in finals.values())
    assert [rep["index"] for rep in finals[0].repetitions] == [0, 1, 2]
    order = orch.cell_order()
    assert [sorted(o) for o in order] == [[0, 1, 2, 3]] * 3
    assert len({tuple(o) for o in order}) > 1  # the order changes between repetitions
    assert LocalLauncher(two_engine_plan(titles, minilm, repeat=3)).cell_order() == order  # seeded: reproducible
    assert LocalLauncher(two_engine_plan(titles, minilm, repeat=1)).cell_order() == [[0, 1, 2, 3]]  # one: plan order


def test_the_first_round_runs_engines_with_nothing_to_prepare_first(titles, minilm):
    from enginebench.engines import engine_class

    engines = ("onnxruntime", "openvino", "ctranslate2", "torch")  # torch eager: the model as it comes
    assert [bool(engine_class(e).prepares) for e in engines] == [True, True, True, False]
    cells = [Cell(engine, "fp32", "latency", "titles", 1, 1, 1) for engine in engines]
    for repeat in (1, 3):
        for seed in range(5):
            plan = Plan(minilm, {"titles": titles}, cells, StoppingRule(duration_s=0, min_samples=1), {},
                        timeout_s=60, repeat=repeat, order_seed=seed)
            assert LocalLauncher(plan).cell_order()[0][0] == 3


def test_a_failed_repetition_is_reported_and_the_others_kept(titles, minilm):
    orch = LocalLauncher(two_engine_plan(titles, minilm, repeat=2))
    first_child = orch.schedule()[0][0]
    victim = first_child.cells[0][0]
    _scripted(orch, fail={(0, victim)})
    finals = {}
    orch.run(lambda index, result: finals.__setitem__(index, result))
    r = finals[victim]
    assert r.status == "ok" and len(r.repetitions) == 1
    assert any("repetition 1 failed" in reason for reason in r.verdict["reasons"])


def test_the_reference_row_is_marked_as_the_reference(titles, minilm):
    plan = two_engine_plan(titles, minilm, repeat=1)
    plan.cells = [Cell("torch", "fp32", "latency", "titles", 1, 1, 1), Cell("onnxruntime", "fp32", "latency", "titles", 1, 1, 1)]
    orch = LocalLauncher(plan)
    measured = measurement(np.full(12, 1_000_000))
    measured.fidelity = {"metric": "min_cosine", "value": 1.0, "ok": True, "threshold": 0.9999}
    reference = orch._result(0, CellHistory(measured=[(0, measured)]))
    other = orch._result(1, CellHistory(measured=[(0, measured)]))
    assert reference.fidelity["reference"] is True and "reference" not in other.fidelity
    from enginebench.formats.tables.encoder import table_rows

    _, rows, _ = table_rows([reference, other])
    assert "reference" in rows[0] and "reference" not in rows[1]


def test_fidelity_is_measured_in_a_cells_first_process_and_reused_by_its_later_ones(titles, minilm):
    """It depends on the engine, its precision and the model, not on the process: a 7B decoder's fidelity pass
    takes longer than its timing, so measuring it in every process would triple a run for nothing."""
    orch = LocalLauncher(two_engine_plan(titles, minilm, repeat=3))
    given: list[tuple[int, dict]] = []  # (repetition, the job's known fidelity)
    measured_fidelity: list[tuple[int, int]] = []  # (repetition, cell) where a child measured it
    failing = orch.schedule()[0][0].cells[0][0]  # its first process fails: the second one measures it

    def child_messages(job, timed_out):
        given.append((job.repetition, dict(job.fidelity)))
        for index, _ in job.cells:
            yield Started(index)
            if job.repetition == 0 and index == failing:
                yield CellFailed(index, "RuntimeError: boom")
                continue
            m = measurement(np.full(12, 1_000_000))
            if index in job.fidelity:
                m.fidelity = job.fidelity[index]
            else:
                measured_fidelity.append((job.repetition, index))
                m.fidelity = {"metric": "min_cosine", "value": 0.99 + index / 1000, "ok": True, "threshold": 0.98}
            yield Measured(index, m)
        yield Done()

    orch._child_messages = child_messages
    orch._references = lambda: None
    finals = {}
    orch.run(lambda index, result: finals.__setitem__(index, result))
    assert sorted(measured_fidelity) == sorted([(0, i) for i in range(4) if i != failing] + [(1, failing)])
    reused = {r: {i: f["value"] for job_r, known in given if job_r == r for i, f in known.items()} for r in range(3)}
    assert reused[0] == {}
    assert reused[1] == {i: 0.99 + i / 1000 for i in range(4) if i != failing}
    assert reused[2] == {i: 0.99 + i / 1000 for i in range(4)}
    assert all(r.fidelity["value"] == 0.99 + i / 1000 for i, r in finals.items())
