"""--padding: fixed pads every input to seq_len; dynamic cuts each batch to its longest input, for every engine
alike, sentence-transformers (which re-tokenises text) included. Each engine records the token positions it really
computed, so a speed-up between results that computed different positions says it is not the same work."""

from dataclasses import replace

import numpy as np
import pytest
from helpers.sessions import load_session

import enginebench as eb
from enginebench.errors import UsageError
from enginebench.scenarios.base import positions_per_item
from enginebench.scenarios.loadgen_sut import rows_batch
from enginebench.store.identity import cell_identity, positions_note
from enginebench.workloads import build_workload


@pytest.fixture(scope="module")
def dynamic_titles(minilm):
    return build_workload("titles", minilm.path, padding="dynamic")


def test_a_dynamic_batch_ends_at_its_longest_input_and_keeps_every_real_token(titles, dynamic_titles):
    lengths = titles.pool.attention_mask.sum(axis=1)
    assert lengths.min() < titles.pool.seq_len  # the titles are shorter than the padded length
    for index, size in ((0, 1), (1, 1), (0, 4), (3, 8)):
        fixed, cut = titles.batch(index, size), dynamic_titles.batch(index, size)
        assert fixed.seq_len == titles.spec.seq_len
        assert cut.seq_len == fixed.attention_mask.sum(axis=1).max() < fixed.seq_len or cut.seq_len == fixed.seq_len
        assert cut.real_tokens == fixed.real_tokens and cut.attention_mask[:, -1].any()  # nothing real lost
        assert np.array_equal(cut.input_ids, fixed.input_ids[:, :cut.seq_len])
    assert {dynamic_titles.batch(i, 1).seq_len for i in range(8)} == {int(n) for n in lengths[:8]}


def test_served_batches_are_cut_the_same_way(titles, dynamic_titles):
    rows = [5, 1, 7]
    assert np.array_equal(rows_batch(titles.pool, rows, dynamic=True).input_ids, dynamic_titles.rows(rows).input_ids)
    assert rows_batch(titles.pool, rows).seq_len == titles.spec.seq_len


def test_the_padding_is_part_of_the_workload_and_checked_before_measuring(minilm, tiny_llama, tmp_path):
    assert build_workload("titles", minilm.path).spec.padding == "fixed"
    with pytest.raises(UsageError, match="--padding"):
        build_workload("titles", minilm.path, padding="longest")
    with pytest.raises(UsageError, match="unknown --padding 'longest': use fixed .* or dynamic"):
        eb.run("minilm", engines=["torch"], padding="longest", db=str(tmp_path / "never.db"))
    with pytest.raises(UsageError, match="--padding are for encoders"):
        eb.run(tiny_llama.path, padding="dynamic", db=str(tmp_path / "never.db"))
    assert not (tmp_path / "never.db").exists()


@pytest.mark.engine
@pytest.mark.parametrize("engine", ["sentence-transformers", "ctranslate2"])
@pytest.mark.parametrize("padding", ["fixed", "dynamic"])
def test_each_engine_computes_the_batch_it_is_given_and_says_so(engine, padding, minilm, titles, dynamic_titles):
    """What computed_positions claims is what the engine ran: the length of the tensors it really computed.
    sentence-transformers re-tokenises the batch's text inside the call and would stop at the batch's longest
    input under fixed padding too; it is asked for the batch's width, so the ids it computes are the batch's own.
    CTranslate2 takes real lengths and computes the dense width it is given (its output keeps it)."""
    session = load_session(engine, minilm)
    batch = (titles if padding == "fixed" else dynamic_titles).batch(0, 4)
    longest = titles.batch(0, 4).longest
    assert longest < titles.spec.seq_len  # else the test shows nothing
    if engine == "sentence-transformers":
        fed = []
        real = session.model.forward
        session.model.forward = lambda features, **kw: fed.append(features["input_ids"].numpy()) or real(features, **kw)
        session.run(session.prepare(batch))
        assert len(fed) == 1 and sorted(map(tuple, fed[0].tolist())) == sorted(map(tuple, batch.input_ids.tolist()))
        # the very ids, padding included (encode sorts the texts by length first)
        computed = [fed[0].shape]
    else:
        (ids, lengths), types, _, _ = session.prepare(batch)
        computed = [tuple(session.encoder.forward_batch(ids, lengths, token_type_ids=types).last_hidden_state.shape[:2])]
    assert len(computed) == 1 and session.computed_positions(batch) == computed[0][0] * computed[0][1]
    assert computed == [(4, titles.spec.seq_len if padding == "fixed" else longest)]


@pytest.mark.engine
def test_dynamic_padding_makes_the_same_work_and_the_same_embeddings(minilm, titles, dynamic_titles, tmp_path):
    """Same embeddings either way, and under either padding onnxruntime and sentence-transformers computed the
    same positions (one real run under dynamic): the results record it and the run's command line reproduces
    it. A result that computed fewer positions (sentence-transformers' own padding, as results stored by
    enginebench before it asked for the batch's width) is called not the same work."""
    ort, st = load_session("onnxruntime", minilm), load_session("sentence-transformers", minilm)
    fixed, cut = (ort.run(ort.prepare(w.batch(2, 8))) for w in (titles, dynamic_titles))
    assert np.allclose(fixed, cut, atol=1e-5)
    st_fixed, st_cut = (st.run(st.prepare(w.batch(2, 8))) for w in (titles, dynamic_titles))
    assert np.allclose(st_fixed, st_cut, atol=1e-5) and np.allclose(st_fixed, fixed, atol=1e-4)
    fixed_positions = {name: positions_per_item(s, titles.batches(4)) for name, s in (("ort", ort), ("st", st))}
    assert fixed_positions["ort"] == fixed_positions["st"] == titles.spec.seq_len

    run = eb.run("minilm", engines=["onnxruntime", "sentence-transformers"], workloads="titles",
                 scenarios=["latency"], batch_size=[4], duration=0.2, min_samples=5, warmup="0.1s", repeat=1,
                 padding="dynamic", db=str(tmp_path / "p.db"))
    by = {r.engine: r for r in run.results}
    assert [r.status for r in by.values()] == ["ok", "ok"]
    assert {r.details["workload"]["padding"] for r in by.values()} == {"dynamic"}
    ort_result, st_result = by["onnxruntime"], by["sentence-transformers"]
    assert ort_result.details["positions_per_item"] == st_result.details["positions_per_item"] < titles.spec.seq_len
    assert positions_note(ort_result, st_result) == ""
    assert "--padding dynamic" in eb.command_line(run)
    own_padding = sum(b.size * b.longest for b in titles.batches(4)) / sum(b.size for b in titles.batches(4))
    assert own_padding < titles.spec.seq_len
    as_fixed = [replace(r, details={**r.details, "positions_per_item": p})
                for r, p in ((ort_result, titles.spec.seq_len), (st_result, own_padding))]
    assert "not the same work" in positions_note(*as_fixed)
    fixed_workload = {**ort_result.details["workload"], "padding": "fixed"}
    assert (cell_identity(replace(ort_result, details={**ort_result.details, "workload": fixed_workload}))
            != cell_identity(ort_result))
