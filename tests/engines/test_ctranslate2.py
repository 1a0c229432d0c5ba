import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.engines import engine_class
from enginebench.measure.fidelity import compare_embeddings
from enginebench.models import resolve_model
from helpers.tiny_bert import make_tiny_bert, mixed_batch

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

ctranslate2 = pytest.importorskip("ctranslate2")


def test_ctranslate2_fp32_matches_torch(minilm, corpus, reference):
    session = load_session("ctranslate2", minilm, "fp32")
    out = embed(session, corpus.fidelity_inputs())
    f = compare_embeddings(out, reference, "fp32")
    print("ctranslate2 fp32 vs torch:", f)
    assert f["ok"] and f["max_abs_diff"] < 1e-4
    assert session.details["compute_type"] == "float32"


def test_ctranslate2_int8_is_close(minilm, corpus, reference):
    session = load_session("ctranslate2", minilm, "int8")
    out = embed(session, corpus.fidelity_inputs())
    f = compare_embeddings(out, reference, "int8")
    print("ctranslate2 int8 vs torch:", f)
    assert f["ok"] and f["max_abs_diff"] > 1e-4  # really quantized: not bit-close to fp32
    assert session.details["compute_type"].startswith("int8") and session.executed_precision == "int8"


def test_conversion_is_cached_per_quantization(minilm):
    from enginebench.models.ctranslate2_convert import ctranslate2_model

    first, _ = ctranslate2_model(minilm, None)
    again, details = ctranslate2_model(minilm, None)
    int8, _ = ctranslate2_model(minilm, "int8")
    assert again == first and details["ct2_cached"] is True and int8 != first


@pytest.mark.parametrize("precision,compute_type", [("bf16", "bfloat16"), ("fp16", "float16"), ("int16", "int16")])
def test_other_precisions_follow_what_the_cpu_build_offers(precision, compute_type):
    reason = engine_class("ctranslate2").why_not_precision(precision)
    offered = compute_type in ctranslate2.get_supported_compute_types("cpu")
    assert (reason is None) == offered
    if reason:
        assert compute_type in reason


def test_ctranslate2_reads_every_size_from_config(tmp_path, minilm):
    """A random BERT with other sizes, eps and three token types, and ragged padding, agrees with torch."""
    tiny = resolve_model(str(make_tiny_bert(tmp_path, minilm.path)))
    batch = mixed_batch()
    torch_session, ct2_session = load_session("torch", tiny), load_session("ctranslate2", tiny)
    expected = torch_session.run(torch_session.prepare(batch))
    out = ct2_session.run(ct2_session.prepare(batch))
    f = compare_embeddings(out, expected, "fp32")
    print("ctranslate2 fp32 vs torch, tiny BERT:", f)
    assert out.shape == (3, 48) and out.dtype == np.float32 and f["ok"] and f["max_abs_diff"] < 1e-4
