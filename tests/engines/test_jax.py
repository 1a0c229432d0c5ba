import json
import os

import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.errors import UsageError
from enginebench.measure.fidelity import compare_embeddings
from enginebench.models import resolve_model
from helpers.tiny_bert import make_tiny_bert, mixed_batch

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

pytest.importorskip("jax")


@pytest.fixture(scope="module")
def jax_fp32(minilm):
    return load_session("jax", minilm, "fp32")


def test_jax_fp32_matches_torch(jax_fp32, corpus, reference):
    out = jax_fp32.run(jax_fp32.prepare(corpus.fidelity_inputs()))
    f = compare_embeddings(out, reference, "fp32")
    print("jax fp32 vs torch:", f)
    assert f["ok"] and f["max_abs_diff"] < 1e-4
    assert out.dtype == np.float32
    assert jax_fp32.details["backend"] == "cpu"
    assert jax_fp32.details["xla_flags"] == os.environ.get("XLA_FLAGS", "")


def test_jax_bf16_is_close_and_returns_float32(minilm, corpus, reference):
    session = load_session("jax", minilm, "bf16")
    out = embed(session, corpus.fidelity_inputs())
    f = compare_embeddings(out, reference, "bf16")
    print("jax bf16 vs torch:", f)
    assert f["ok"] and f["max_abs_diff"] > 1e-5  # really ran in bf16: not bit-close to fp32
    assert out.dtype == np.float32 and session.executed_precision == "bf16"
    assert session.details["compute_dtype"] == "bfloat16"


def test_jax_compiles_in_prepare_never_in_run(jax_fp32, corpus):
    prepared = jax_fp32.prepare(corpus.batch(3, 2))
    compiled = jax_fp32.forward._cache_size()
    jax_fp32.run(prepared)
    assert jax_fp32.forward._cache_size() == compiled
    jax_fp32.prepare(corpus.batch(0, 5))  # a new shape compiles, in prepare
    assert jax_fp32.forward._cache_size() == compiled + 1
    assert (5, corpus.spec.seq_len) in jax_fp32.details["compiled_shapes"]


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_jax_reads_every_size_from_config(tmp_path, minilm, hidden_act):
    """A random BERT with other sizes, eps, activation and three token types agrees with torch."""
    tiny = resolve_model(str(make_tiny_bert(tmp_path, minilm.path, hidden_act)))
    batch = mixed_batch()
    torch_session, jax_session = load_session("torch", tiny), load_session("jax", tiny)
    expected = torch_session.run(torch_session.prepare(batch))
    out = jax_session.run(jax_session.prepare(batch))
    f = compare_embeddings(out, expected, "fp32")
    print(f"jax fp32 vs torch, tiny BERT ({hidden_act}):", f)
    assert out.shape == (3, 48) and f["ok"] and f["max_abs_diff"] < 1e-4


def test_non_bert_config_is_refused_with_a_reason(tmp_path):
    from enginebench.models.bert_weights import read_bert_config

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta", "hidden_size": 8}))
    with pytest.raises(UsageError, match="roberta"):
        read_bert_config(tmp_path)
