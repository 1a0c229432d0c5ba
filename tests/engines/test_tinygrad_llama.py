"""tinygrad Llama decoder against transformers fp32: full forward, prefill, the KV-cached decode step (compiled once
per shape), a deliberately broken cache failing cache agreement, fp16 and int8 labelled from what runs, SmolLM2."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tinygrad")
pytest.importorskip("transformers")

from helpers.sessions import WrappedDecoder, load_session  # noqa: E402
from helpers.tiny_llama import prompt_ids  # noqa: E402

from enginebench.engines.base import DecoderSession  # noqa: E402
from enginebench.measure.llm_fidelity import compare_decoder, reference_data, thresholds_for  # noqa: E402
from enginebench.workloads.prompts import corpus_token_rows  # noqa: E402

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

# fp32 differs from transformers only by summation order; the tiny Llama's logits are O(1)
FP32_MAX_ABS = 1e-4
NEW_TOKENS = 12
PROMPT = 16  # the prompt length every cached test here uses: one prefill shape to compile


@pytest.fixture(scope="module")
def fp32(tiny_llama):
    return load_session("tinygrad", tiny_llama, "fp32", threads=1)


@pytest.fixture(scope="module")
def reference(tiny_llama):
    """torch fp32's fidelity reference on the tiny Llama, as the generate scenario builds it."""
    torch_fp32 = load_session("torch", tiny_llama, "fp32", threads=1)
    ids = corpus_token_rows(tiny_llama.path, rows=2, length=48, seed=11)
    return reference_data(torch_fp32, ids, ids[:, :PROMPT], new_tokens=NEW_TOKENS)


def test_engine_dispatches_decoders_and_reads_back_what_runs(fp32):
    assert isinstance(fp32, DecoderSession)
    assert fp32.executed_precision == "fp32"
    assert set(fp32.details["weight_dtypes"].values()) == {"float32"}
    assert fp32.details["threads_used"] >= 1 and "/proc/self/task" in fp32.details["threads_source"]
    assert fp32.details["weight_bytes"] > 0 and "quantization" not in fp32.details


def test_fp32_prefill_and_cached_decode_match_transformers(fp32, llama_reference, tiny_llama):
    ids = prompt_ids(tiny_llama, batch=1, length=PROMPT + 8, seed=3)
    ref = llama_reference.logits(ids)
    assert np.abs(fp32.forward_logits(ids) - ref).max() < FP32_MAX_ABS
    fp32.reset()
    first = fp32.prefill(ids[:, :PROMPT])
    steps = np.stack([fp32.decode(ids[:, i:i + 1]) for i in range(PROMPT, PROMPT + 8)], axis=1)
    assert first.dtype == np.float32 and first.shape == (1, ref.shape[-1])
    assert np.abs(first - ref[:, PROMPT - 1]).max() < FP32_MAX_ABS
    assert np.abs(steps - ref[:, PROMPT:]).max() < FP32_MAX_ABS


def test_stream_generates_transformers_greedy_tokens(fp32, llama_reference, tiny_llama):
    prompt = prompt_ids(tiny_llama, batch=1, length=PROMPT, seed=1)
    tokens = np.stack(list(fp32.stream(prompt, 8)), axis=1)
    np.testing.assert_array_equal(tokens, llama_reference.greedy(prompt, 8))


def test_decode_step_is_compiled_once_for_twenty_tokens(fp32, tiny_llama, monkeypatch):
    """TinyJit captures the decode step once per (batch, capacity); later tokens replay it: no kernel is compiled
    (clang, or tinygrad's compile cache) while 20 tokens are decoded at 20 positions."""
    from tinygrad.device import Compiler

    compiles = []
    original = Compiler.compile_cached
    monkeypatch.setattr(Compiler, "compile_cached", lambda self, src: compiles.append(src) or original(self, src))
    fp32.reset()
    token = fp32.prefill(prompt_ids(tiny_llama, batch=1, length=PROMPT, seed=4)).argmax(-1)[:, None]
    before = {k: dict(v) for k, v in fp32.details["compiled"].items()}
    for _ in range(20):
        token = fp32.decode(token).argmax(-1)[:, None]
    assert compiles == []
    key = f"decode/1/{fp32.capacity}"
    record = fp32.details["compiled"][key]
    assert record["captures"] == 1 and record["calls"] == before[key]["calls"] + 20
    assert record["first_calls_s"] > 0  # recorded apart from the timed calls
    assert [k for k in fp32.details["compiled"] if k.startswith("decode/")] == [key]


def test_a_batch_runs_padded_to_a_compiled_batch_size(fp32, tiny_llama):
    """The static batcher's batches vary in size: one between the sizes compiled runs at the next compiled size
    (rows repeated, their logits dropped) rather than compiling a new shape while requests wait."""
    ids = prompt_ids(tiny_llama, batch=3, length=PROMPT + 2, seed=6)
    fp32.reset()
    fp32.prefill(ids[:, :PROMPT])
    fp32.decode(ids[:, PROMPT:PROMPT + 1])  # batch 3 compiled, beside batch 1
    fp32.reset()
    first = fp32.prefill(ids[:2, :PROMPT])
    second = fp32.decode(ids[:2, PROMPT:PROMPT + 1])
    assert first.shape == second.shape == (2, fp32.vocab_size)
    assert not [k for k in fp32.details["compiled"] if k.split("/")[1] == "2"]
    assert fp32.details["padded_batches"]["2->3"] == 1
    for row in range(2):  # each row as it comes alone, at batch 1
        fp32.reset()
        alone = fp32.prefill(ids[row:row + 1, :PROMPT])
        np.testing.assert_allclose(first[row], alone[0], atol=FP32_MAX_ABS)
        np.testing.assert_allclose(second[row], fp32.decode(ids[row:row + 1, PROMPT:PROMPT + 1])[0], atol=FP32_MAX_ABS)


def test_a_full_cache_doubles_and_decoding_goes_on_exactly(tiny_llama, llama_reference):
    """context=16: a 12-token prompt and 8 decode steps outgrow the cache, which is copied into one of 32
    positions (a new decode shape, captured once) and the logits stay transformers'."""
    session = load_session("tinygrad", tiny_llama, "fp32", threads=1, context=16)
    ids = prompt_ids(tiny_llama, batch=1, length=20, seed=7)
    ref = llama_reference.logits(ids)
    session.reset()
    session.prefill(ids[:, :12])
    steps = np.stack([session.decode(ids[:, i:i + 1]) for i in range(12, 20)], axis=1)
    assert np.abs(steps - ref[:, 12:]).max() < FP32_MAX_ABS
    assert session.details["cache_grown"] == [[16, 32]] and session.capacity == 32
    assert session.details["compiled"]["decode/1/32"]["captures"] == 1


def test_decode_without_prefill_and_bad_ids_are_refused(fp32):
    fp32.reset()
    with pytest.raises(RuntimeError, match="prefill"):
        fp32.decode(np.zeros((1, 1), np.int64))
    with pytest.raises(ValueError, match="token ids"):
        fp32.forward_logits(np.array([[0, 10_000]]))


class BrokenCache(WrappedDecoder):
    """The tinygrad session with a deliberately broken KV cache; its compiled steps and forward_logits intact."""

    def prefill(self, tokens):
        logits = self.inner.prefill(tokens)
        if self.fault == "zeroed":  # the prompt's keys and values are wiped from the cache buffers in place
            from tinygrad import Tensor

            for k, v in self.inner._caches[(self.inner.rows, self.inner.capacity)]:
                k.assign(Tensor.zeros(*k.shape).contiguous()).realize()
                v.assign(Tensor.zeros(*v.shape).contiguous()).realize()
        if self.fault == "positions":  # decoding resumes 7 positions late: rotary and slots shifted
            self.inner.position += 7
        return logits

    def decode(self, tokens):
        logits = self.inner.decode(tokens)
        if self.fault == "stale":  # the position never advances: each token overwrites the last one's slot
            self.inner.position -= 1
        return logits


def test_intact_cache_passes(fp32, reference):
    result = compare_decoder(fp32, reference, "fp32")
    assert result["ok"], result["failures"]
    assert result["cache_agreement"] >= thresholds_for("fp32")["top1"] and result["value"] >= 0.99


@pytest.mark.parametrize("fault", ["zeroed", "stale", "positions"])
def test_broken_cache_fails_cache_agreement(fp32, reference, fault):
    result = compare_decoder(BrokenCache(fp32, fault), reference, "fp32")
    assert result["value"] >= 0.99 and result["greedy_agreement"] >= 0.99  # teacher forcing is blind to the cache
    assert not result["ok"]
    assert result["cache_agreement"] < 0.7, result["cache_agreement"]
    assert any(f.startswith("cache agreement") for f in result["failures"])


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precisions_run_what_they_say_and_stay_faithful(tiny_llama, reference, precision):
    session = load_session("tinygrad", tiny_llama, precision, threads=1)
    assert session.executed_precision == precision  # read back from the matmul weights' dtypes
    weights = set(session.details["weight_dtypes"].values())
    if precision == "int8":
        assert weights == {"int8"}
        q = session.details["quantization"]
        assert q["weights"] == "int8" and q["activations"] == "float32"
        assert q["share_of_matmul_flops"] == 1.0 and q["matmuls"]["quantized"] == q["matmuls"]["total"] == 2 * 4 + 1
        # 1 byte a weight (+ a float32 scale per row), not 4: what the roofline's bytes per token come from
        assert session.details["weight_bytes"] < 0.3 * tiny_llama.params * 4
    else:
        assert weights == {"float16"} and "quantization" not in session.details
    result = compare_decoder(session, reference, precision)
    limits = thresholds_for(precision)
    assert result["ok"], result["failures"]
    assert result["value"] >= limits["top1"] and result["cache_agreement"] >= limits["top1"]
    assert result["mean_abs_logit_error"] > 1e-6  # really ran reduced: not bit-close to fp32


def test_int8_refused_for_encoders_and_unknown_precisions_for_decoders(tiny_llama, minilm):
    from enginebench.engines import engine_class

    cls = engine_class("tinygrad")
    assert "decoders only" in cls.why_not(minilm, "int8")
    assert cls.why_not(minilm, "fp32") is None and cls.why_not(tiny_llama, "int8") is None
    assert "fp32, fp16, int8" in cls.why_not(tiny_llama, "bf16")


@pytest.mark.slow  # SmolLM2's shapes take tinygrad minutes to generate and compile on a busy 2-core machine
def test_smollm2_fp32_generates_like_torch():
    from enginebench.models import resolve_model

    spec = resolve_model("smollm2-135m")
    torch_fp32 = load_session("torch", spec, "fp32", threads=2)
    ids = corpus_token_rows(spec.path, rows=1, length=40, seed=5)
    reference = reference_data(torch_fp32, ids, ids[:, :PROMPT], new_tokens=8)
    session = load_session("tinygrad", spec, "fp32", threads=2)
    result = compare_decoder(session, reference, "fp32")
    print("tinygrad fp32 vs torch on SmolLM2:", {k: v for k, v in result.items() if not isinstance(v, list)})
    assert result["ok"], result["failures"]
    assert result["cache_agreement"] >= 0.99 and result["value"] >= 0.99 and result["greedy_agreement"] >= 0.99
    assert result["mean_abs_logit_error"] < 1e-3 and abs(result["perplexity_increase"]) < 1e-4
