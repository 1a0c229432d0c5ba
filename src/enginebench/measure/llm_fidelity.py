"""Decoder fidelity: an engine's logits against the torch fp32 reference, under teacher forcing.

Free-running greedy text diverges for good after the first near-tie (two tokens within rounding of each
other), so one early flip would count every later token as wrong. Every metric here therefore feeds the
engine the REFERENCE's context and compares position by position:

- greedy_agreement: the reference greedily generates tokens after a prompt; the engine scores prompt +
  those tokens in one forward; fraction of positions where its argmax is the token the reference chose.
- top1_agreement: fraction of corpus positions where engine and reference pick the same next token.
- mean_abs_logit_error: mean |engine logit - reference logit| over every corpus position and vocabulary entry.
- perplexity: exp(mean next-token negative log-likelihood) of the corpus slice, engine and reference, and
  the relative increase.

Thresholds (the verdict's `ok`): fp32 engines differ from the reference only by summation order, so they must
agree on at least 99% of top-1 choices (the rest are near-ties) with perplexity within 0.1%. Reduced
precision (bf16, int8, 4-bit) may flip near-ties but must keep 90% top-1 agreement and perplexity within 5%:
llama.cpp Q4_1 against its own dequantized fp32 weights agrees on ~95% of positions.
"""

from __future__ import annotations

import numpy as np

THRESHOLDS = {"fp32": {"top1": 0.99, "ppl_increase": 0.001}}
REDUCED_PRECISION = {"top1": 0.90, "ppl_increase": 0.05}


def thresholds_for(precision: str) -> dict:
    return THRESHOLDS.get(precision, REDUCED_PRECISION)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """exp of the mean NLL of tokens[:, 1:] given logits[:, :-1] ([batch, n, vocab], [batch, n])."""
    logp = log_softmax(logits[:, :-1])
    nll = -np.take_along_axis(logp, np.asarray(tokens)[:, 1:, None], axis=-1)
    return float(np.exp(nll.mean()))


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
    return float((np.argmax(logits, -1) == np.argmax(reference, -1)).mean())


def greedy_context(prompt: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """The sequence an engine scores for greedy agreement: prompt + the reference's tokens but the last."""
    return np.concatenate([prompt, generated[:, :-1]], axis=1).astype(np.int64)


def greedy_agreement(context_logits: np.ndarray, prompt_len: int, generated: np.ndarray) -> float:
    """Per position under teacher forcing: the engine's argmax after each reference prefix vs the reference's token."""
    chosen = np.argmax(context_logits[:, prompt_len - 1:], -1)
    return float((chosen == generated).mean())


def reference_data(session, fidelity_ids: np.ndarray, greedy_prompt: np.ndarray, new_tokens: int) -> dict:
    """What the reference engine contributes, once per run."""
    generated = np.stack(list(session.stream(greedy_prompt, new_tokens)), axis=1).astype(np.int64)
    logits = session.forward_logits(fidelity_ids).astype(np.float32)
    return {"fidelity_ids": fidelity_ids, "logits": logits, "perplexity": perplexity(logits, fidelity_ids),
            "greedy_prompt": greedy_prompt, "generated": generated}


def compare_decoder(session, reference: dict, precision: str) -> dict:
    """The engine's fidelity against reference_data(); the headline value is top-1 agreement."""
    ids = reference["fidelity_ids"]
    logits = session.forward_logits(ids)
    if logits.shape != reference["logits"].shape:
        return {"metric": "top1_agreement", "value": None, "ok": False, "threshold": thresholds_for(precision)["top1"],
                "error": f"logits shape {logits.shape} differs from the reference's {reference['logits'].shape}"}
    prompt, generated = reference["greedy_prompt"], reference["generated"]
    greedy = greedy_agreement(session.forward_logits(greedy_context(prompt, generated)), prompt.shape[1], generated)
    return score(logits, reference, precision, greedy)


def score(logits: np.ndarray, reference: dict, precision: str, greedy: float | None) -> dict:
    limits = thresholds_for(precision)
    top1 = top1_agreement(logits, reference["logits"])
    ppl = perplexity(logits, reference["fidelity_ids"])
    ref_ppl = reference["perplexity"]
    increase = ppl / ref_ppl - 1.0
    finite = bool(np.isfinite(logits).all())
    return {
        "metric": "top1_agreement", "value": top1, "threshold": limits["top1"],
        "ok": finite and top1 >= limits["top1"] and increase <= limits["ppl_increase"],
        "greedy_agreement": greedy,
        "mean_abs_logit_error": float(np.abs(logits.astype(np.float64) - reference["logits"]).mean()),
        "perplexity": ppl, "reference_perplexity": ref_ppl, "perplexity_increase": increase,
        "ppl_increase_threshold": limits["ppl_increase"],
        "positions": int(logits.shape[0] * logits.shape[1]),
        "greedy_positions": int(reference["generated"].size),
    }


__all__ = ["THRESHOLDS", "REDUCED_PRECISION", "thresholds_for", "perplexity", "top1_agreement", "greedy_agreement",
           "greedy_context", "reference_data", "compare_decoder", "score"]
