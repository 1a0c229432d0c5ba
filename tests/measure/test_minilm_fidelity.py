import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.measure.fidelity import compare_embeddings, threshold_for

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


def test_torch_reference_matches_sentence_transformers(minilm, corpus, reference):
    """Our pooling + normalisation is what sentence-transformers computes for all-MiniLM-L6-v2."""
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    st = SentenceTransformer(minilm.path, device="cpu")
    st.max_seq_length = corpus.spec.seq_len
    tok = Tokenizer.from_file(minilm.path + "/tokenizer.json")
    inputs = corpus.fidelity_inputs()
    # decode our token ids back to text so sentence-transformers tokenizes the same content itself
    texts = [tok.decode(ids[mask.astype(bool)].tolist()) for ids, mask in zip(inputs.input_ids, inputs.attention_mask)]
    expected = st.encode(texts, convert_to_numpy=True, normalize_embeddings=False)
    f = compare_embeddings(reference, expected, "fp32")
    assert f["ok"], f
    assert np.allclose(np.linalg.norm(reference, axis=1), 1.0, atol=1e-5)


def test_onnxruntime_fp32_matches_torch(minilm, corpus, reference):
    session = load_session("onnxruntime", minilm)
    out = embed(session, corpus.fidelity_inputs())
    f = compare_embeddings(out, reference, "fp32")
    print("onnxruntime fp32 vs torch:", f)
    assert f["ok"] and f["value"] > 0.99999 and f["max_abs_diff"] < 1e-4
    assert session.details["onnx_path"].endswith("model.onnx")


def test_onnx_export_is_cached_and_keyed_by_content(minilm):
    from enginebench.models.onnx_export import onnx_encoder

    first, _ = onnx_encoder(minilm)
    path, details = onnx_encoder(minilm)
    assert path == first and details["onnx_cached"] is True


def test_fidelity_flags_wrong_outputs(reference):
    rng = np.random.default_rng(0)
    wrong = rng.standard_normal(reference.shape)
    f = compare_embeddings(wrong, reference, "fp32")
    assert not f["ok"] and f["value"] < 0.5
    slightly_off = reference + rng.normal(0, 0.003, reference.shape)
    assert not compare_embeddings(slightly_off, reference, "fp32")["ok"]  # fine for int8, not for fp32
    assert compare_embeddings(slightly_off, reference, "int8")["ok"]
    assert threshold_for("fp32") > threshold_for("int8")
    assert not compare_embeddings(reference[:3], reference, "fp32")["ok"]  # shape mismatch
