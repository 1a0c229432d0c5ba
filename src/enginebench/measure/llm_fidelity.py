"""Decoder fidelity: an engine's logits against the torch fp32 reference, under teacher forcing, and its cached
decode loop against its own full forward.

Free-running greedy text diverges for good after the first near-tie (two tokens within rounding of each
other), so one early flip would count every later token as wrong. Every metric here therefore compares
position by position under the same context:

- greedy_agreement: the reference greedily generates tokens after a prompt; the engine scores prompt +
  those tokens in one forward; fraction of positions where its argmax is the token the reference chose.
- top1_agreement: fraction of corpus positions where engine and reference pick the same next token.
- mean_abs_logit_error: mean |engine logit - reference logit| over every corpus position and vocabulary entry.
- perplexity: exp(mean next-token negative log-likelihood) of the corpus slice, engine and reference, and
  the relative increase.
- cache_agreement: the metrics above score full forwards (forward_logits: no KV cache), but the generate
  scenario times the cached loop (prefill then decode, or the engine's own loop): a KV cache that forgets
  tokens or uses wrong positions would pass them all. So the engine also generates greedily through
  session.stream() (the path the scenario times, one prompt at a time: batch 1, so no engine resizes
  what the timed calls use), and each generated token is compared with the engine's own full-forward argmax
  on the same context (forward_logits of prompt + the tokens it generated): the fraction that agree.
  cached_reference_agreement compares the same tokens with the reference's greedy tokens where the two
  contexts are still the same (up to and including each row's first divergence); it is reported, not judged,
  since one near-tie early in a row ends the comparison. An engine without forward_logits gets only this
  comparison (and no top-1 agreement: its `ok` is false with the reason).

Thresholds (the verdict's `ok`): fp32 engines differ from the reference only by summation order, so they must
agree on at least 99% of top-1 choices (the rest are near-ties) with perplexity within 0.1%. Reduced
precision (bf16, int8, 4-bit) may flip near-ties but must keep 90% top-1 agreement and perplexity within 5%:
llama.cpp Q4_1 against its own dequantized fp32 weights agrees on ~95% of positions.
cache_agreement must reach the same top-1 threshold (99% fp32, 90% reduced), not 100%: the cached loop does
the same arithmetic in another order (a one-row product per token against one [n, d] product for the whole
context, attention over the cache against a causal mask, and for reduced precisions activation scales or
rounding points taken per call), so where two logits lie within rounding the argmax can flip; such near-ties
are rare, while a broken cache (context forgotten, positions shifted) loses most positions.
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
            "greedy_prompt": greedy_prompt, "generated": generated,
            "weights": (getattr(session, "details", None) or {}).get("weights")}


def cached_generation(session, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
    """Greedy tokens [batch, new_tokens] through session.stream(), the path the generate scenario times: one
    prompt at a time (batch 1, the default and the shape no engine resizes its context for)."""
    rows = []
    for row in np.asarray(prompt):
        steps = list(session.stream(row[None, :], new_tokens))
        if len(steps) != new_tokens:
            raise RuntimeError(f"stream() yielded {len(steps)} tokens, asked for {new_tokens}")
        rows.append(np.stack([np.asarray(t).reshape(-1)[0] for t in steps]))
    return np.stack(rows).astype(np.int64)


def first_divergence(a: np.ndarray, b: np.ndarray) -> list[int | None]:
    """Per row, the first position where two token sequences differ (None: they never do)."""
    out = []
    for row in np.asarray(a) != np.asarray(b):
        out.append(int(np.argmax(row)) if row.any() else None)
    return out


def cached_vs_reference(cached: np.ndarray, generated: np.ndarray) -> dict:
    """Cached greedy tokens against the reference's, per position while the two contexts are the same: a row
    is compared up to and including its first divergence (after it, the contexts differ)."""
    n = generated.shape[1]
    firsts = first_divergence(cached, generated)
    compared = sum(n if d is None else d + 1 for d in firsts)
    agreed = sum(n if d is None else d for d in firsts)
    return {"cached_reference_agreement": agreed / compared if compared else None,
            "cached_reference_positions": compared, "cached_first_divergence": firsts}


def check_cache(session, reference: dict) -> dict:
    """The engine's cached decode loop: against its own full forward (cache_agreement) and the reference."""
    prompt, generated = reference["greedy_prompt"], reference["generated"]
    cached = cached_generation(session, prompt, generated.shape[1])
    out = cached_vs_reference(cached, generated)
    out["cache_positions"] = int(cached.size)
    try:
        context_logits = session.forward_logits(greedy_context(prompt, cached))
    except NotImplementedError:
        out["cache_agreement"] = None
        return out
    # the same per-position comparison as greedy agreement, with the engine's own cached tokens as the context
    out["cache_agreement"] = greedy_agreement(context_logits, prompt.shape[1], cached)
    return out


def compare_decoder(session, reference: dict, precision: str) -> dict:
    """The engine's fidelity against reference_data(); the headline value is top-1 agreement."""
    ids = reference["fidelity_ids"]
    limits = thresholds_for(precision)
    try:
        logits = session.forward_logits(ids)
    except NotImplementedError as e:  # no teacher forcing: only the cached tokens against the reference's
        cache = check_cache(session, reference)
        return {"metric": "top1_agreement", "value": None, "ok": False, "threshold": limits["top1"],
                "error": f"{e}: top-1 agreement, perplexity and cache agreement unmeasured",
                "failures": [f"no forward_logits ({e})"], **cache}
    if logits.shape != reference["logits"].shape:
        error = f"logits shape {logits.shape} differs from the reference's {reference['logits'].shape}"
        return {"metric": "top1_agreement", "value": None, "ok": False, "threshold": limits["top1"],
                "error": error, "failures": [error]}
    prompt, generated = reference["greedy_prompt"], reference["generated"]
    greedy = greedy_agreement(session.forward_logits(greedy_context(prompt, generated)), prompt.shape[1], generated)
    return score(logits, reference, precision, greedy, check_cache(session, reference))


SERVED_POSITIONS = 16  # per greedy prompt, the positions a server is asked for under teacher forcing


def compare_served_generation(session, reference: dict) -> dict:
    """A server's greedy choices (temperature 0, through its API: no logits) against the reference's greedy
    tokens. `greedy_agreement` (the headline, as for engines): under teacher forcing, the server is sent each
    prompt followed by the reference's first k generated tokens and asked for one token, for the first
    SERVED_POSITIONS positions k of each prompt; the share it picks as the reference did. Beside it, its own
    free-running generations against the reference's (cached_vs_reference: up to each row's first divergence).
    The server's text is read back with the local tokenizer, so a server that segments text otherwise shows
    as a disagreement too. Judged against the reduced-precision top-1 threshold (a served model is usually
    quantized)."""
    prompt, generated = reference["greedy_prompt"], reference["generated"]
    positions = min(SERVED_POSITIONS, generated.shape[1])
    p = prompt.shape[1]
    context = greedy_context(prompt, generated)
    contexts = [row[:p + k] for row in context for k in range(positions)]
    picked = np.asarray(session.next_tokens(contexts), dtype=np.int64).reshape(len(prompt), positions)
    agreement = float((picked == generated[:, :positions]).mean())
    free = cached_vs_reference(cached_generation(session, prompt, generated.shape[1]), generated)
    threshold = REDUCED_PRECISION["top1"]
    failures = [] if agreement >= threshold else [
        f"greedy agreement {agreement:.3f} < {threshold}: the server's greedy tokens differ from the reference's"]
    return {"metric": "greedy_agreement", "value": agreement, "threshold": threshold, "ok": not failures,
            "failures": failures, "greedy_agreement": agreement, "greedy_positions": int(picked.size),
            "free_running_agreement": free["cached_reference_agreement"],
            "first_divergence": free["cached_first_divergence"]}


def score(logits: np.ndarray, reference: dict, precision: str, greedy: float | None,
          cache: dict | None = None) -> dict:
    limits = thresholds_for(precision)
    top1 = top1_agreement(logits, reference["logits"])
    ppl = perplexity(logits, reference["fidelity_ids"])
    ref_ppl = reference["perplexity"]
    increase = ppl / ref_ppl - 1.0
    finite = bool(np.isfinite(logits).all())
    failures = []
    if not finite:
        failures.append("non-finite logits")
    if top1 < limits["top1"]:
        failures.append(f"top-1 agreement {top1:.3f} < {limits['top1']}")
    if increase > limits["ppl_increase"]:
        failures.append(f"perplexity {increase:+.2%} vs the reference (limit {limits['ppl_increase']:+.1%})")
    cache = dict(cache or {})
    if "cache_agreement" in cache:
        agreement = cache["cache_agreement"]
        if agreement is None:
            failures.append("cache agreement unmeasured (no forward_logits)")
        elif agreement < limits["top1"]:
            failures.append(f"cache agreement {agreement:.3f} < {limits['top1']}: the timed cached loop (KV cache, "
                            "a token per call) picks other tokens than the engine's own full forward on the same "
                            "context")
        cache["cache_threshold"] = limits["top1"]
    return {
        "metric": "top1_agreement", "value": top1, "threshold": limits["top1"],
        "ok": not failures,
        "failures": failures,
        "greedy_agreement": greedy,
        "mean_abs_logit_error": float(np.abs(logits.astype(np.float64) - reference["logits"]).mean()),
        "perplexity": ppl, "reference_perplexity": ref_ppl, "perplexity_increase": increase,
        "ppl_increase_threshold": limits["ppl_increase"],
        "positions": int(logits.shape[0] * logits.shape[1]),
        "greedy_positions": int(reference["generated"].size),
        # how the reference held its weights (e.g. 16-bit as stored, cast per call: a 7B fits that way)
        **({"reference_weights": reference["weights"]} if reference.get("weights") else {}),
        **cache,
    }


__all__ = ["THRESHOLDS", "REDUCED_PRECISION", "thresholds_for", "perplexity", "top1_agreement", "greedy_agreement",
           "greedy_context", "reference_data", "compare_decoder", "compare_served_generation", "score", "cached_generation", "cached_vs_reference",
           "check_cache", "first_divergence"]
