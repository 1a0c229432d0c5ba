"""Decoder fidelity metrics: identical engines agree fully, perturbed logits score lower, thresholds bite."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sessions import load_session
from helpers.tiny_llama import tiny_llama_spec

from enginebench.measure.llm_fidelity import (
    compare_decoder, greedy_agreement, greedy_context, perplexity, reference_data, score, thresholds_for,
)
from enginebench.workloads.prompts import corpus_token_rows

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama_spec()


@pytest.fixture(scope="module")
def reference(tiny):
    session = load_session("torch", tiny, "fp32", threads=1)
    ids = corpus_token_rows(tiny.path, rows=2, length=48, seed=11)
    return session, reference_data(session, ids, ids[:, :16], new_tokens=12)


def test_identical_engine_agrees_fully(reference):
    session, ref = reference
    result = compare_decoder(session, ref, "fp32")
    assert result["value"] == 1.0 and result["greedy_agreement"] == 1.0
    assert result["mean_abs_logit_error"] < 1e-5 and abs(result["perplexity_increase"]) < 1e-9
    assert result["ok"] and result["greedy_positions"] == 24 and result["positions"] == 96
    assert result["cache_agreement"] == 1.0 and result["cache_positions"] == 24  # its cached loop is its forward


def test_perturbed_logits_score_lower(reference):
    _, ref = reference
    rng = np.random.default_rng(0)
    noisy = ref["logits"] + rng.standard_normal(ref["logits"].shape).astype(np.float32) * 1.5
    result = score(noisy, ref, "fp32", greedy=None)
    assert result["value"] < 0.9 and result["mean_abs_logit_error"] > 1.0
    assert result["perplexity_increase"] > 0 and not result["ok"]
    assert any(f.startswith("top-1 agreement") for f in result["failures"])
    assert any(f.startswith("perplexity") for f in result["failures"])
    mild = score(ref["logits"] + 1e-3 * rng.standard_normal(ref["logits"].shape).astype(np.float32), ref, "int8", None)
    assert mild["ok"] and mild["value"] >= thresholds_for("int8")["top1"]


def test_reduced_precision_against_fp32(tiny, reference):
    _, ref = reference
    bf16 = compare_decoder(load_session("torch", tiny, "bf16", threads=1), ref, "bf16")
    assert bf16["ok"] and 0.9 <= bf16["value"] <= 1.0 and 0 < bf16["mean_abs_logit_error"] < 0.1
    # int8 activations on a 64-wide model lose more: clearly worse than bf16, far better than chance (1/512)
    int8 = compare_decoder(load_session("torch", tiny, "int8", threads=1), ref, "int8")
    assert 0.5 < int8["value"] <= 1.0 and int8["mean_abs_logit_error"] > bf16["mean_abs_logit_error"]


def test_perplexity_of_uniform_logits_is_the_vocabulary():
    tokens = np.array([[1, 2, 3, 4]])
    assert perplexity(np.zeros((1, 4, 50), np.float32), tokens) == pytest.approx(50.0)
    confident = np.full((1, 4, 50), -30.0, np.float32)
    confident[0, np.arange(3), tokens[0, 1:]] = 30.0
    assert perplexity(confident, tokens) == pytest.approx(1.0)


def test_greedy_agreement_compares_per_position_under_teacher_forcing():
    prompt = np.array([[5, 6, 7]])
    generated = np.array([[1, 2, 3, 4]])
    context = greedy_context(prompt, generated)
    np.testing.assert_array_equal(context, [[5, 6, 7, 1, 2, 3]])
    logits = np.zeros((1, 6, 10), np.float32)
    for pos, token in zip(range(2, 6), [1, 2, 9, 4]):  # one early miss does not count the rest as wrong
        logits[0, pos, token] = 1.0
    assert greedy_agreement(logits, 3, generated) == 0.75
