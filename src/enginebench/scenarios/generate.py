"""Greedy generation, timed like llama-bench: prefill (pp) and decode (tg) measured directly, never derived.

pp<N>: each sample is one prefill call of N prompt tokens on a freshly reset cache (the reset is not timed).
tg<N>: each generation prefills the prompt (its duration, plus the argmax of the first token, is a time to
first token) and then decodes N-1 tokens; each sample is one decode call. The argmax choosing the next token
runs between two timed calls, outside the clock.

Engines that own their generation loop (they override DecoderSession.stream, e.g. CTranslate2) are timed
through stream(): time to first token is the first yield, each decode sample the gap between two yields (or
between the session's own per-token timestamps, `step_times_ns`, where it keeps them).
Warm-up first (whole generations, so engines compiling per shape compile there), then the stopping rule:
measure for at least its duration AND until at least min_samples samples.
"""

from __future__ import annotations

import time

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.measure.memory import peak_rss_mb, reset_peak_rss
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.base import Measurement
from enginebench.workloads.prompts import PromptSet

_clock = time.perf_counter_ns


def owns_generation_loop(session: DecoderSession) -> bool:
    return type(session).stream is not DecoderSession.stream


def _prefill_once(session: DecoderSession, prompt: np.ndarray) -> int:
    session.reset()
    t0 = _clock()
    session.prefill(prompt)
    return _clock() - t0


def _generate_direct(session: DecoderSession, prompt: np.ndarray, new_tokens: int) -> tuple[int, list[int]]:
    """(time to first token, [decode call durations]) in ns."""
    session.reset()
    t0 = _clock()
    logits = session.prefill(prompt)
    token = logits.argmax(-1)
    ttft = _clock() - t0
    steps = []
    for _ in range(new_tokens - 1):
        ids = token[:, None]
        t0 = _clock()
        logits = session.decode(ids)
        t1 = _clock()
        steps.append(t1 - t0)
        token = logits.argmax(-1)
    return ttft, steps


def _generate_stream(session: DecoderSession, prompt: np.ndarray, new_tokens: int) -> tuple[int, list[int]]:
    marks = []
    t0 = _clock()
    for _ in session.stream(prompt, new_tokens):
        marks.append(_clock())
    if len(marks) != new_tokens:
        raise RuntimeError(f"stream() yielded {len(marks)} tokens, asked for {new_tokens}")
    # An engine generating on its own thread can run ahead of this loop (tokens queue up, so the gaps between
    # yields would time the queue). Such a session records when each token was really chosen, on the same
    # clock (time.perf_counter_ns), in `step_times_ns`; those marks are used when there is one per token.
    engine_marks = list(getattr(session, "step_times_ns", None) or [])
    if len(engine_marks) == new_tokens and engine_marks[0] >= t0:
        marks = engine_marks
    return marks[0] - t0, np.diff(marks).tolist()


def run_generate(session: DecoderSession, prompts: PromptSet, batch_size: int, rule: StoppingRule,
                 load_s: float) -> Measurement:
    test = prompts.test
    inputs = [prompts.batch(i, batch_size) for i in range(max(1, len(prompts.prompts) // batch_size))]
    streamed = owns_generation_loop(session)
    generate = _generate_stream if streamed else _generate_direct
    if test.kind == "pp":
        if streamed:
            def once(p):
                return _generate_stream(session, p, 1)[0]
        else:
            def once(p):
                return _prefill_once(session, p)
    else:
        def once(p):
            return generate(session, p, test.gen_len)

    warm_end = _clock() + int(rule.warmup_s * 1e9)
    n = 0
    while n < max(1, rule.min_warmup) or _clock() < warm_end:
        once(inputs[n % len(inputs)])
        n += 1

    reset_peak_rss()
    samples: list[int] = []
    ttft: list[int] = []
    started = time.perf_counter()
    stop_at = _clock() + int(rule.duration_s * 1e9)
    i = 0
    while True:
        got = once(inputs[i % len(inputs)])
        i += 1
        if test.kind == "pp":
            samples.append(got)
        else:
            ttft.append(got[0])
            samples.extend(got[1])
        if _clock() >= stop_at and len(samples) >= rule.min_samples:
            break
    wall = time.perf_counter() - started
    details = {**session.details, "test": test.name, "prompt_len": test.prompt_len, "gen_len": test.gen_len,
               "timing": "stream() yields" if streamed else "prefill()/decode() calls",
               "generations" if test.kind == "tg" else "prefills": i}
    if ttft:
        details["ttft_ns"] = ttft
    return Measurement(
        worker_samples=[np.asarray(samples, dtype=np.int64)],
        items_per_call=batch_size,
        tokens_per_item=float(test.prompt_len if test.kind == "pp" else 1),
        load_s=load_s,
        peak_rss_mb=peak_rss_mb(),
        executed_precision=session.executed_precision,
        wall_s=wall,
        details=details,
    )


__all__ = ["run_generate", "owns_generation_loop"]
