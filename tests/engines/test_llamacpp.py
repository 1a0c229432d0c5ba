"""llama.cpp engine: logits against transformers on the same weights, KV cache, batches, quantized files."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.sessions import load_session
from enginebench.errors import UsageError
from enginebench.models import resolve_model
from enginebench.models.llama_synthetic import TINY_LLAMA, write_synthetic_llama

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_logits(folder: str, ids: np.ndarray) -> np.ndarray:
    model = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(ids, dtype=np.int64))).logits.numpy()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    write_synthetic_llama(folder, TINY_LLAMA, seed=0)
    return resolve_model(str(folder))


@pytest.fixture(scope="module")
def tokens() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(3, 500, size=(2, 48))


@pytest.fixture(scope="module")
def reference(tiny, tokens):
    return hf_logits(tiny.path, tokens)


def test_fp32_matches_transformers(tiny, tokens, reference):
    session = load_session("llamacpp", tiny, "fp32")
    assert session.executed_precision == "fp32" and session.vocab_size == TINY_LLAMA["vocab_size"]
    logits = session.forward_logits(tokens[:1])
    assert logits.shape == (1, tokens.shape[1], TINY_LLAMA["vocab_size"])
    np.testing.assert_allclose(logits, reference[:1], atol=2e-2)
    assert (logits.argmax(-1) == reference[:1].argmax(-1)).mean() == 1.0


def test_kv_cache_prefill_then_decode_matches_teacher_forcing(tiny, tokens, reference):
    session = load_session("llamacpp", tiny, "fp32")
    prompt = tokens[:1, :40]
    last = session.prefill(prompt)
    np.testing.assert_allclose(last, reference[:1, 39], atol=2e-2)
    for i in range(40, 44):
        step = session.decode(tokens[:1, i:i + 1])
        np.testing.assert_allclose(step, reference[:1, i], atol=2e-2)
    session.reset()  # a fresh sequence gives the first logits again
    np.testing.assert_allclose(session.prefill(prompt), last, atol=1e-5)


def test_batch_rows_are_independent_sequences(tiny, tokens, reference):
    session = load_session("llamacpp", tiny, "fp32", max_batch=2)
    last = session.prefill(tokens[:, :40])
    np.testing.assert_allclose(last, reference[:, 39], atol=2e-2)
    step = session.decode(tokens[:, 40:41])
    np.testing.assert_allclose(step, reference[:, 40], atol=2e-2)


def test_inputs_longer_than_n_batch_are_fed_in_chunks(tiny, tokens, reference):
    session = load_session("llamacpp", tiny, "fp32", n_batch=16, max_batch=2)
    np.testing.assert_allclose(session.forward_logits(tokens), reference, atol=2e-2)


def test_context_overflow_is_an_error(tiny, tokens):
    session = load_session("llamacpp", tiny, "fp32", n_ctx=32)
    with pytest.raises(RuntimeError, match="n_ctx"):
        session.prefill(tokens[:1, :40])


def test_quantized_files_shrink_and_stay_close(tiny, tokens, reference):
    sizes, agreement = {}, {}
    for precision in ("fp32", "fp16", "q8_0", "q4_0"):
        session = load_session("llamacpp", tiny, precision)
        assert session.executed_precision == precision
        sizes[precision] = session.details["weight_bytes"]
        logits = session.forward_logits(tokens)
        agreement[precision] = (logits.argmax(-1) == reference.argmax(-1)).mean()
        if precision == "q8_0":
            corr = np.corrcoef(logits.ravel(), reference.ravel())[0, 1]
            assert corr > 0.99, corr
        session.close()
    assert sizes["fp32"] > sizes["fp16"] > sizes["q8_0"] > sizes["q4_0"]
    assert agreement["fp16"] >= 0.98 and agreement["q8_0"] >= 0.9, agreement


def test_extra_buffer_types_follow_the_builds_own_report(tiny):
    """llama.cpp's AMX buffer type segfaults on quantized weights: auto leaves the extra buffer types out where
    the build reports AMX_INT8, and uses them elsewhere; the option overrides; the session records which."""
    from enginebench.engines.llamacpp import extra_buffers_decision

    amx = "CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    assert extra_buffers_decision("auto", amx)[0] is False and "20824" in extra_buffers_decision("auto", amx)[1]
    assert extra_buffers_decision("auto", "CPU : AVX2 = 1 | REPACK = 1 |")[0] is True
    assert extra_buffers_decision("on", amx) == (True, "-o llamacpp.extra_buffers=on")
    session = load_session("llamacpp", tiny, "q8_0")
    used = session.details["extra_buffers"]["used"]
    assert used is ("AMX_INT8 = 1" not in session.details["system_info"])
    session.close()
    with pytest.raises(ValueError, match="auto, on, off"):
        load_session("llamacpp", tiny, "q8_0", extra_buffers="maybe")


def test_quantized_file_is_cached(tiny):
    first = load_session("llamacpp", tiny, "q8_0")
    again = load_session("llamacpp", tiny, "q8_0")
    assert again.details["gguf_cached"] and again.details["gguf_path"] == first.details["gguf_path"]


def test_native_precision_needs_a_gguf_model(tiny, tmp_path):
    from enginebench.engines.llamacpp import LlamaCppEngine

    assert "GGUF" in LlamaCppEngine.why_not(tiny, "native")
    assert LlamaCppEngine.why_not(tiny, "q4_k_m") is None
    with pytest.raises(UsageError, match="GGUF"):
        load_session("llamacpp", tiny, "native")
    from enginebench.models.gguf_llama import hf_to_gguf

    hf_to_gguf(tiny.path, tmp_path / "tiny-f16.gguf", "f16")
    session = load_session("llamacpp", resolve_model(str(tmp_path / "tiny-f16.gguf")), "native")
    assert session.executed_precision == "fp16"


def test_encoders_are_refused(minilm):
    from enginebench.engines.llamacpp import LlamaCppEngine

    assert "decoder" in LlamaCppEngine.why_not(minilm, "fp32")
    with pytest.raises(UsageError, match="decoder"):
        load_session("llamacpp", minilm, "fp32")


@pytest.fixture(scope="module")
def smollm2(require):
    try:
        return resolve_model("smollm2-135m")
    except UsageError as e:  # the model package missing or broken: a failure under `make test`
        require(str(e))


def test_smollm2_tokenizer_matches_llama_cpp(smollm2):
    """The tokenizer.json rebuilt from GGUF metadata splits text exactly as llama.cpp does."""
    from llama_cpp import Llama
    from tokenizers import Tokenizer

    from enginebench.workloads.corpus import python_docs_paragraphs

    tokenizer = Tokenizer.from_file(f"{smollm2.path}/tokenizer.json")
    vocab = Llama(model_path=smollm2.gguf_path, vocab_only=True, verbose=False)
    texts = python_docs_paragraphs()[:20] + ["x = 3.14159; naïve café 2024\n\n  <|im_start|>user"]
    for text in texts:
        assert vocab.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(text).ids


@pytest.mark.slow
def test_smollm2_llama_cpp_agrees_with_the_fp32_reference(smollm2):
    """Teacher forcing over corpus text: the top token per position against transformers fp32."""
    from tokenizers import Tokenizer

    from enginebench.workloads.corpus import python_docs_paragraphs

    tokenizer = Tokenizer.from_file(f"{smollm2.path}/tokenizer.json")
    ids = np.array([tokenizer.encode(" ".join(python_docs_paragraphs()[10:14])).ids[:128]])
    reference = hf_logits(smollm2.path, ids).argmax(-1)
    agreement = {}
    for precision in ("fp32", "native", "q8_0"):
        session = load_session("llamacpp", smollm2, precision)
        agreement[precision] = (session.forward_logits(ids).argmax(-1) == reference).mean()
        session.close()
    assert agreement["fp32"] >= 0.99 and agreement["native"] >= 0.9 and agreement["q8_0"] >= 0.9, agreement
