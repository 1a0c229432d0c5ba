"""One cell identity for compare and recommend: cells match only when they did the same work (store/identity.py)."""

from __future__ import annotations

import dataclasses

import pytest
from helpers.compared_runs import CONFIG, MACHINE, make_result
from helpers.recommended_runs import REC_CONFIG, REC_MACHINE, ranked_result

from enginebench.analysis.compare import compare_runs
from enginebench.analysis.recommend import Constraints, recommend
from enginebench.formats.tables.comparison import notes
from enginebench.store.identity import Matching, cell_identity
from enginebench.store.model import Run

MODEL = {"name": "minilm", "path": "/cache/minilm", "content_hash": "c0ffee" * 4, "until": None}
WORKLOADS = {"titles": {"name": "titles", "seed": 0, "seq_len": 16, "source": "titles", "digest": "d1" * 12}}
FULL = {**CONFIG, "model": MODEL, "workloads": WORKLOADS}


def _run(run_id, results, config=FULL, created="t") -> Run:
    return Run(run_id, created, MACHINE, dict(config), results)


def _with(r, **changes):
    return dataclasses.replace(r, **changes)


def test_identical_configurations_still_match():
    cmp = compare_runs(_run("a", [make_result(seed=1)]), _run("b", [make_result(seed=2)]))
    assert len(cmp.cells) == 1 and not cmp.only_in_base and not cmp.only_in_new and not cmp.near_misses


def test_a_model_renamed_but_of_the_same_content_is_the_same_cell():
    renamed = {**FULL, "model": {**MODEL, "name": "my-minilm", "path": "/elsewhere/my-minilm"}}
    cmp = compare_runs(_run("a", [make_result(seed=1)]),
                       _run("b", [_with(make_result(seed=2), model="my-minilm")], renamed))
    assert len(cmp.cells) == 1


@pytest.mark.parametrize("change, differs", [
    (lambda r, c: (_with(r, seq_len=64), c), "base seq 16, new seq 64"),
    (lambda r, c: (r, {**c, "model": {**MODEL, "until": "/encoder/layer.1/Add"}}),
     "base cut at none (the whole model), new cut at /encoder/layer.1/Add"),
    (lambda r, c: (r, {**c, "model": {**MODEL, "content_hash": "beef" * 6}}),
     "base model content c0ffeec0, new model content beefbeef"),
    (lambda r, c: (r, {**c, "workloads": {"titles": {**WORKLOADS["titles"], "digest": "e2" * 12}}}),
     "base corpus d1d1d1d1, new corpus e2e2e2e2"),
    (lambda r, c: (_with(r, engine_options={"intra_op_threads": 4}), c),
     "base option intra_op_threads 2, new option intra_op_threads 4"),
    (lambda r, c: (_with(r, details={"serving_settings": {"qps": 10.0, "max_batch": 4, "max_wait_ms": 2.0}}), c),
     "base max_batch 8, new max_batch 4"),
])
def test_cells_that_did_other_work_are_not_matched_and_the_difference_is_named(change, differs):
    base = make_result(seed=1)
    base.engine_options = {"intra_op_threads": 2}
    new, config = change(make_result(seed=2), FULL)
    if not new.engine_options:
        new.engine_options = {"intra_op_threads": 2}
    if "serving_settings" in new.details:  # a serving cell: base at max batch 8
        base.details = {"serving_settings": {"qps": 10.0, "max_batch": 8, "max_wait_ms": 2.0}}
    cmp = compare_runs(_run("a", [base]), _run("b", [new], config))
    assert not cmp.cells
    assert len(cmp.only_in_base) == 1 and len(cmp.only_in_new) == 1
    [near] = cmp.near_misses
    assert differs in near["differs"]
    [issue] = cmp.issues
    assert issue.kind == "missing" and differs in issue.reason and cmp.fails_gate()
    assert any(differs in line for line in notes(cmp))  # only in new (b): ... (not the same cell: ...)


def test_what_an_older_run_did_not_record_is_left_out_of_the_match_and_said():
    cmp = compare_runs(_run("a", [make_result(seed=1)], {**CONFIG, "model": {"name": "minilm"}}),
                       _run("b", [make_result(seed=2)]))
    assert len(cmp.cells) == 1
    assert any("base run did not record the corpus digest" in line for line in cmp.setup_differences)
    assert any("base run did not record the model's content digest" in line for line in cmp.setup_differences)


def test_an_engine_option_one_run_does_not_record_is_matched_without():
    base, new = make_result(seed=1), make_result(seed=2)
    base.engine_options, new.engine_options = {"threads": 2}, {"threads": 2, "arena": True}
    cmp = compare_runs(_run("a", [base]), _run("b", [new]))
    assert len(cmp.cells) == 1
    assert any("option arena recorded in the new run only" in line for line in cmp.setup_differences)


def test_the_identity_has_a_stable_text():
    r = make_result(seed=1)
    run = _run("a", [r])
    assert cell_identity(r, run).text() == cell_identity(make_result(seed=9), run).text()
    assert cell_identity(r, run) != cell_identity(_with(r, seq_len=64), run)
    m = Matching([cell_identity(r, run)], [cell_identity(r, run)])
    assert m.key(cell_identity(r, run)) == m.key(cell_identity(make_result(seed=3), run))


# --- recommend: results of other work never compete ------------------------------------------------------------

def _rec_run(results, run_id, created, until=None, content="c0ffee") -> Run:
    config = {**REC_CONFIG, "model": {**MODEL, "until": until, "content_hash": content},
              "workloads": {"titles": WORKLOADS["titles"]}}
    return Run(run_id, created, dict(REC_MACHINE), config, results)


def test_a_seq_64_result_never_competes_with_seq_128_ones():
    full = _rec_run([ranked_result("torch", 20.0, seed=1), ranked_result("onnxruntime", 10.0, seed=2)], "full",
                    "2026-11-25T10:00:00+00:00")
    short = ranked_result("openvino", 2.0, seed=3)
    short.seq_len = 8  # fewer tokens per input: faster, but other work
    older = _rec_run([short], "short", "2026-11-24T10:00:00+00:00")
    rec = recommend([full, older], Constraints(objective="latency"))
    assert rec.best.engine == "onnxruntime" and rec.excluded == {"other seq_len": 1}
    assert any("judged at seq 16 · the whole model (run full" in n for n in rec.notes)


def test_a_cut_model_never_competes_with_the_whole_one():
    whole = _rec_run([ranked_result("torch", 20.0, seed=1), ranked_result("onnxruntime", 10.0, seed=2)], "whole",
                     "2026-11-24T10:00:00+00:00")
    cut = _rec_run([ranked_result("openvino", 2.0, seed=3), ranked_result("torch", 4.0, seed=4)], "cut",
                   "2026-11-25T10:00:00+00:00", until="/encoder/layer.1/Add")
    rec = recommend([whole, cut], Constraints(objective="latency"))  # the newest run (the cut one) is judged
    assert rec.best.engine == "openvino" and rec.excluded == {"other model cut (--until)": 2}
    assert [v.run_id for v in rec.versus] == ["cut"]  # the default path of the cut model, not the whole one's
    rec = recommend([whole], Constraints(objective="latency"))
    assert rec.best.engine == "onnxruntime" and not rec.excluded
