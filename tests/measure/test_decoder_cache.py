"""Decoder fidelity checks the cached decode loop the generate scenario times, not only full forwards.

A session whose KV cache is broken (decode forgets the context, never stores the generated tokens, or uses
shifted positions) still scores 100% on every teacher-forced metric, since forward_logits runs without the
cache; the cache check (stream() against the engine's own forward on the same context) must fail it.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sessions import WrappedDecoder, load_session
from helpers.tiny_llama import tiny_llama_spec

from enginebench.engines.base import DecoderSession
from enginebench.measure.llm_fidelity import (
    cached_generation, cached_vs_reference, compare_decoder, first_divergence, reference_data, thresholds_for,
)
from enginebench.workloads.prompts import corpus_token_rows

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama_spec()


@pytest.fixture(scope="module")
def torch_fp32(tiny):
    return load_session("torch", tiny, "fp32", threads=1)


@pytest.fixture(scope="module")
def reference(tiny, torch_fp32):
    ids = corpus_token_rows(tiny.path, rows=2, length=48, seed=11)
    return reference_data(torch_fp32, ids, ids[:, :16], new_tokens=NEW_TOKENS)


class BrokenCache(WrappedDecoder):
    """The torch decoder with a deliberately broken KV cache in decode(); prefill and forward_logits intact."""

    def decode(self, tokens):
        inner, torch = self.inner, self.inner.torch
        if self.fault == "forgets":  # the context is dropped: each token is decoded alone, at position 0
            inner.reset()
            return inner.decode(tokens)
        if self.fault == "stale":  # the generated tokens never enter the cache (nor advance the position)
            logits = inner.decode(tokens)
            inner.cache.crop(-1)
            return logits
        assert self.fault == "positions"  # the cache is kept, but the rotary positions are off by 7
        position = inner.cache.get_seq_length() + 7
        ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        with torch.inference_mode():
            out = inner.model(input_ids=ids, past_key_values=inner.cache, use_cache=True, logits_to_keep=1,
                              position_ids=torch.full((len(tokens), 1), position))
        inner.cache = out.past_key_values
        return out.logits.float().numpy()[:, -1]


def test_intact_cache_passes(torch_fp32, reference):
    result = compare_decoder(torch_fp32, reference, "fp32")
    assert result["ok"] and result["failures"] == []
    assert result["cache_agreement"] == 1.0 and result["cache_positions"] == 2 * NEW_TOKENS
    assert result["cache_threshold"] == thresholds_for("fp32")["top1"]
    assert result["cached_reference_agreement"] == 1.0 and result["cached_first_divergence"] == [None, None]


@pytest.mark.parametrize("fault", ["forgets", "stale", "positions"])
def test_broken_cache_fails_fidelity(torch_fp32, reference, fault):
    result = compare_decoder(BrokenCache(torch_fp32, fault), reference, "fp32")
    # every teacher-forced metric is blind to the cache: they still read perfect
    assert result["value"] == 1.0 and result["greedy_agreement"] == 1.0 and abs(result["perplexity_increase"]) < 1e-9
    assert not result["ok"]
    assert result["cache_agreement"] < 0.7  # far below even the reduced-precision threshold
    assert any(f.startswith("cache agreement") for f in result["failures"])
    assert any(d is not None for d in result["cached_first_divergence"])
    # a reduced precision's looser threshold does not let it through either
    assert not compare_decoder(BrokenCache(torch_fp32, fault), reference, "bf16")["ok"]


class _NoForward(WrappedDecoder):
    """An engine without forward_logits: only its cached tokens can be compared with the reference's."""

    def __init__(self, inner, fault: str | None = None):
        super().__init__(BrokenCache(inner, fault) if fault else inner)

    forward_logits = DecoderSession.forward_logits  # the base's: raises NotImplementedError


def test_engine_without_forward_logits_reports_the_cached_tokens(torch_fp32, reference):
    intact = compare_decoder(_NoForward(torch_fp32), reference, "fp32")
    assert intact["value"] is None and not intact["ok"] and "every position" in intact["error"]
    assert intact["cache_agreement"] is None
    assert intact["cached_reference_agreement"] == 1.0 and intact["cached_first_divergence"] == [None, None]
    broken = compare_decoder(_NoForward(torch_fp32, "forgets"), reference, "fp32")
    assert broken["cached_reference_agreement"] < 1.0 and None not in broken["cached_first_divergence"]


def test_cached_tokens_against_the_reference_only_while_contexts_agree():
    reference = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    cached = np.array([[1, 2, 9, 4], [5, 6, 7, 8]])  # row 0 diverges at 2: position 3's context differs
    assert first_divergence(cached, reference) == [2, None]
    got = cached_vs_reference(cached, reference)
    assert got["cached_reference_positions"] == 3 + 4 and got["cached_reference_agreement"] == 6 / 7


def test_cached_generation_runs_one_prompt_at_a_time(torch_fp32, reference):
    prompt = reference["greedy_prompt"]
    cached = cached_generation(torch_fp32, prompt, NEW_TOKENS)
    assert cached.shape == (2, NEW_TOKENS) and cached.dtype == np.int64
    np.testing.assert_array_equal(cached, reference["generated"])  # torch fp32 against itself


@pytest.mark.parametrize("engine", ["jax", "ctranslate2", "llamacpp", "tinygrad"])
def test_every_decoder_engines_cache_agrees_with_its_forward(tiny, reference, engine):
    """fp32 engines' cached loops (their prefill/decode or their own loop) pass the cache check."""
    from enginebench.engines import engine_class

    cls = engine_class(engine)
    if cls.missing():
        pytest.skip(f"{engine} not installed")
    session = load_session(engine, tiny, "fp32", threads=1)
    result = compare_decoder(session, reference, "fp32")
    assert result["cache_agreement"] >= thresholds_for("fp32")["top1"], result
    assert result["ok"], result["failures"]


def test_ctranslate2_prepared_prompts_stream_the_same_tokens(tiny, reference):
    pytest.importorskip("ctranslate2")
    session = load_session("ctranslate2", tiny, "fp32", threads=1)
    prompt = reference["greedy_prompt"]
    prepared = session.prepare_prompt(prompt)
    assert prepared.strings[0][0] == session.vocabulary[prompt[0, 0]] and len(prepared) == 2
    from_ids = np.stack(list(session.stream(prompt, 5)), axis=1)
    np.testing.assert_array_equal(np.stack(list(session.stream(prepared, 5)), axis=1), from_ids)
    host = session.host_side(prompt, "stream", 3)
    assert not host["inside_timed_call"] and len(host["samples_ns"]) == 3 and "token strings" in host["what"]
    assert session.host_side(prompt, "decode", 3) is None
