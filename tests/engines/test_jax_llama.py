"""JAX Llama decoder against transformers fp32 on a tiny_llama synthetic Llama: full forward, prefill, cached decode."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("transformers")

from helpers.sessions import load_session  # noqa: E402
from helpers.tiny_llama import argmax_agreement, forward_error, prompt_ids  # noqa: E402

from enginebench.engines.base import DecoderSession  # noqa: E402

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

# fp32 differs from transformers only by summation order; logits are O(1..10)
FP32_MAX_ABS = 1e-4
# bf16 (8-bit mantissa weights, activations and cache; float32 accumulation): measured max |diff| ~0.1
BF16_MAX_ABS = 0.3
BF16_MIN_ARGMAX_AGREEMENT = 0.9


@pytest.fixture(scope="module")
def sessions(tiny_llama):
    return {p: load_session("jax", tiny_llama, p) for p in ("fp32", "bf16")}


def test_engine_dispatches_decoders_to_the_llama_session(sessions):
    session = sessions["fp32"]
    assert isinstance(session, DecoderSession)
    assert session.executed_precision == "fp32" and session.details["compute_dtype"] == "float32"
    assert sessions["bf16"].details["compute_dtype"] == "bfloat16"


def test_fp32_forward_logits_match_transformers(sessions, llama_reference, tiny_llama):
    assert forward_error(sessions["fp32"], llama_reference, prompt_ids(tiny_llama)) < FP32_MAX_ABS


def test_fp32_prefill_then_cached_decode_equals_full_forward(sessions, llama_reference, tiny_llama):
    session = sessions["fp32"]
    ids = prompt_ids(tiny_llama, length=40)
    ref = llama_reference.logits(ids)
    session.min_capacity = 16  # 24-token prompt -> capacity 32, so decoding past 32 exercises the cache doubling
    try:
        session.reset()
        first = session.prefill(ids[:, :24])
        steps = np.stack([session.decode(ids[:, i:i + 1]) for i in range(24, 40)], axis=1)
    finally:
        session.min_capacity = 256
    assert np.abs(first - ref[:, 23]).max() < FP32_MAX_ABS
    assert np.abs(steps - ref[:, 24:40]).max() < FP32_MAX_ABS
    assert ("decode", 2, 64) in session.details["compiled_shapes"]  # the doubling really happened


def test_prefill_starts_a_fresh_sequence(sessions, tiny_llama):
    session = sessions["fp32"]
    ids = prompt_ids(tiny_llama, length=12)  # the stream test's shape: no extra compilation
    a = session.prefill(ids)
    session.decode(ids[:, :1])
    b = session.prefill(ids)
    np.testing.assert_array_equal(a, b)


def test_decode_without_prefill_is_refused(tiny_llama):
    session = load_session("jax", tiny_llama, "fp32")
    with pytest.raises(RuntimeError, match="prefill"):
        session.decode(np.zeros((1, 1), np.int64))


def test_stream_generates_transformers_greedy_tokens(sessions, llama_reference, tiny_llama):
    prompt = prompt_ids(tiny_llama, length=12, seed=1)
    tokens = np.stack(list(sessions["fp32"].stream(prompt, 8)), axis=1)
    np.testing.assert_array_equal(tokens, llama_reference.greedy(prompt, 8))


def test_bf16_stays_close_to_fp32_reference(sessions, llama_reference, tiny_llama):
    session = sessions["bf16"]
    ids = prompt_ids(tiny_llama, batch=4, length=32, seed=2)
    ref = llama_reference.logits(ids)
    full = session.forward_logits(ids)
    session.prefill(ids[:, :16])
    steps = np.stack([session.decode(ids[:, i:i + 1]) for i in range(16, 32)], axis=1)
    assert session.executed_precision == "bf16"
    for out in (full, np.concatenate([full[:, :16], steps], axis=1)):
        assert 0 < np.abs(out - ref).max() < BF16_MAX_ABS  # > 0: bf16 really ran
        assert argmax_agreement(out, ref) >= BF16_MIN_ARGMAX_AGREEMENT


def test_out_of_vocabulary_ids_are_rejected(sessions, tiny_llama):
    with pytest.raises(ValueError, match="token ids"):
        sessions["fp32"].forward_logits(np.array([[0, 10_000]]))
