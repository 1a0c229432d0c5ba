import json

import numpy as np
import pytest

from enginebench.errors import UsageError
from enginebench.workloads import TITLES_SEQ_LEN, build_workload, titles
from enginebench.workloads.corpus import python_docs_paragraphs, read_corpus
from enginebench.workloads.tokenize import load_tokenizer, token_lengths


def test_corpus_is_deterministic_for_a_seed(minilm):
    a = build_workload("corpus", minilm.path, seq_len=64, seed=7)
    b = build_workload("corpus", minilm.path, seq_len=64, seed=7)
    c = build_workload("corpus", minilm.path, seq_len=64, seed=8)
    assert np.array_equal(a.pool.input_ids, b.pool.input_ids)
    assert not np.array_equal(a.pool.input_ids, c.pool.input_ids)
    assert a.spec.seed == 7 and a.spec.source == "python-docs"


@pytest.mark.parametrize("seq_len", [16, 128, 256])
def test_corpus_inputs_have_exactly_seq_len_tokens(minilm, seq_len):
    w = build_workload("corpus", minilm.path, seq_len=seq_len)
    assert w.pool.input_ids.shape == (256, seq_len)
    assert w.pool.input_ids.dtype == np.int64
    real = w.pool.attention_mask.sum(axis=1)
    assert real.max() == seq_len
    # the default corpus is real prose long enough that most inputs are truncated, not padded
    if seq_len == 128:
        assert (real == seq_len).mean() > 0.6


def test_default_corpus_is_prose_shipped_with_python():
    docs = python_docs_paragraphs()
    assert len(docs) > 100
    assert all(len(d.split()) >= 8 for d in docs)
    assert not any(d.startswith(">>>") for d in docs)


def test_titles_are_about_13_tokens_padded_to_a_fixed_length(minilm):
    texts = titles()
    assert len(texts) == 32
    lengths = token_lengths(load_tokenizer(minilm.path), texts)
    assert 12 <= np.mean(lengths) <= 14.5
    assert max(lengths) <= TITLES_SEQ_LEN  # nothing truncated
    w = build_workload("titles", minilm.path)
    assert w.pool.input_ids.shape == (32, TITLES_SEQ_LEN)
    assert list(w.pool.attention_mask.sum(axis=1)) == lengths


def test_batches_wrap_around_the_pool(titles):
    b = titles.batch(1, 20)  # items 20..39 wrap to 0..7
    assert b.size == 20
    assert np.array_equal(b.input_ids[12:], titles.pool.input_ids[:8])
    assert len(titles.batches(64)) == 1  # bigger than the pool: one distinct batch


def test_user_corpus_formats(tmp_path, minilm):
    lines = ["first document about engines", "second one on tokens", "third about batches"]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(lines)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": lines, "url": ["u"] * 3}), tmp_path / "c.parquet")
    for name in ("c.txt", "c.jsonl", "c.parquet"):
        assert read_corpus(str(tmp_path / name)) == lines
    w = build_workload("corpus", minilm.path, seq_len=32, corpus=str(tmp_path / "c.parquet"))
    assert w.pool.size == 256  # sampled with replacement from 3 documents
    assert w.spec.source.endswith("c.parquet")


@pytest.mark.parametrize("content,name,fragment", [
    ("", "empty.txt", "holds no text"),
    ("\n  \n", "blank.txt", "holds no text"),
    ('{"body": "x"}\n', "bad.jsonl", "no field 'text'"),
    ("not parquet", "bad.parquet", "cannot read corpus"),
    ("x", "c.csv", "unknown format"),
])
def test_bad_corpus_is_a_usage_error(tmp_path, content, name, fragment):
    (tmp_path / name).write_text(content)
    with pytest.raises(UsageError, match=fragment):
        read_corpus(str(tmp_path / name))


def test_missing_corpus_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        read_corpus(str(tmp_path / "nope.txt"))
