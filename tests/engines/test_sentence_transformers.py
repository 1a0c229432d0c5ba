"""The sentence-transformers baseline: same embeddings as the torch reference, tokenisation inside the timed call."""

import numpy as np
import pytest
from helpers.sessions import embed, load_session

from enginebench.engines import REGISTRY, engine_class
from enginebench.measure.fidelity import compare_embeddings
from enginebench.workloads.tokenize import load_tokenizer

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


@pytest.fixture(scope="module")
def st_session(minilm):
    return load_session("sentence-transformers", minilm)


@pytest.fixture(scope="module")
def titles_reference(minilm, titles):
    return embed(load_session("torch", minilm), titles.fidelity_inputs())


def test_fp32_embeddings_match_the_torch_reference(st_session, corpus, reference, titles, titles_reference):
    for inputs, expected in ((corpus.fidelity_inputs(), reference), (titles.fidelity_inputs(), titles_reference)):
        f = compare_embeddings(embed(st_session, inputs), expected, "fp32")
        assert f["ok"] and f["value"] >= 0.999, f
    assert st_session.executed_precision == "fp32"


def test_bf16_is_executed_in_bf16_and_stays_close(minilm, titles, titles_reference):
    session = load_session("sentence-transformers", minilm, "bf16")
    assert session.executed_precision == "bf16"  # read back from the layers, not echoed
    f = compare_embeddings(embed(session, titles.fidelity_inputs()), titles_reference, "bf16")
    assert f["ok"] and f["value"] < 1.0, f  # close, yet really reduced precision


def test_decoded_texts_retokenise_to_the_workload_ids(minilm, st_session, corpus, titles):
    tokenizer = load_tokenizer(minilm.path)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    for workload in (titles, corpus):
        batch = workload.pool
        prepared = st_session.prepare(batch)
        assert all(isinstance(t, str) for t in prepared.texts) and prepared.width == batch.seq_len
        for text, ids, mask in zip(prepared.texts, batch.input_ids, batch.attention_mask):
            assert tokenizer.encode(text).ids == ids[mask.astype(bool)].tolist()


def test_tokenisation_runs_inside_the_timed_call(st_session, titles, monkeypatch):
    calls = []
    real = st_session.model.preprocess
    monkeypatch.setattr(st_session.model, "preprocess", lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw))
    prepared = st_session.prepare(titles.batch(0, 4))
    assert calls == []  # prepare() only decodes ids to text
    out = st_session.run(prepared)
    assert out.shape == (4, 384) and len(calls) == 1 and sorted(calls[0]) == sorted(prepared.texts)
    assert "tokenisation" in st_session.details["timed_call"]


def test_a_folder_without_modules_json_gets_mean_pooling_and_normalize(minilm, titles, titles_reference, tmp_path):
    import dataclasses
    from pathlib import Path

    for item in Path(minilm.path).iterdir():
        if item.name not in ("modules.json", "1_Pooling", "sentence_bert_config.json"):
            (tmp_path / item.name).symlink_to(item)
    session = load_session("sentence-transformers", dataclasses.replace(minilm, path=str(tmp_path)))
    assert session.details["modules"].startswith("built")
    out = embed(session, titles.fidelity_inputs())
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert compare_embeddings(out, titles_reference, "fp32")["ok"]


def test_threads_and_device_are_read_back(st_session):
    assert st_session.details["threads_used"] == 2 and st_session.details["device"] == "cpu"
    with pytest.raises(ValueError, match="device takes one of"):
        engine_class("sentence-transformers").make_options(1, {"device": "tpu9"})


def test_it_is_registered_and_in_the_feature_table():
    from enginebench.formats.tables.features import probe_engines, status

    assert "sentence-transformers" in REGISTRY
    info = next(i for i in probe_engines() if i.name == "sentence-transformers")
    assert status(info) == "installed" and "cpu" in info.devices and info.precisions == ("fp32", "bf16")
    assert "32-bit" in info.bits and "16-bit" in info.bits
