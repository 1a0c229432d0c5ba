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

Such an engine cannot prefill without generating (CTranslate2's KV cache lives inside generate_batch), so its
pp<N> samples are stream() calls asked for one token: a time to first token (CTranslate2 forwards the prompt
but its last token at once, then the last one as its loop's first step, takes the argmax and calls back), not
a bare prefill. details["pp_timed_as"] says which ("prefill" or "ttft"), so no
prefill tokens/s is derived from a TTFT.

What each timed call holds is recorded per engine (details["timed_call"], from the session's `timed_calls`).
One region is timed per call; where the engine cannot avoid host-side work inside it (llama.cpp's batch
filling and logits copy), or where such work was moved before the clock (CTranslate2's ids -> token strings,
done in the session's prepare_prompt()), the session's host_side() times that work alone on the same inputs,
after measurement, and details["host_side"] records it: what, median_ms, share_of_call (of the median timed
call it belongs to: the sample for pp and tg decode steps; the TTFT for a stream's per-generation work),
inside_timed_call.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.measure.llm_fidelity import compare_decoder
from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.measure.rates import rate_summary
from enginebench.measure.roofline import decode_roofline
from enginebench.measure.stats import summarize
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell
from enginebench.scenarios.base import DECODER_REFERENCE, CellRun, Grid, Measurement, Scenario
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


HOST_SIDE_REPEATS = 7
_DIRECT_TTFT = "prefill() then the numpy argmax of the first token"


def timed_call(session: DecoderSession, kind: str, streamed: bool) -> str:
    """What one sample of this test holds, in words: the scenario's part and the engine's (`timed_calls`)."""
    calls = getattr(session, "timed_calls", None) or {}
    name = type(session).__name__
    if streamed:
        what = calls.get("stream") or f"{name}.stream()"
        if kind == "pp":
            return f"time to first token of stream(prompt, 1), clock read on the engine's thread where it can: {what}"
        return f"the gap between two tokens of stream(), clock read on the engine's thread where it can: {what}"
    if kind == "pp":
        return f"prefill(): {calls.get('prefill') or name + '.prefill()'}"
    return f"decode(): {calls.get('decode') or name + '.decode()'} (TTFT: {_DIRECT_TTFT})"


def measure_host_side(session: DecoderSession, kind: str, streamed: bool, prompt: np.ndarray,
                      samples: list[int], ttft: list[int]) -> dict | None:
    """The session's host-side work (host_side(tokens, call)) timed alone on this test's inputs, as a share of
    the median timed call it belongs to. None for engines that report none."""
    host_side = getattr(session, "host_side", None)
    if host_side is None:
        return None
    call = "stream" if streamed else ("prefill" if kind == "pp" else "decode")
    tokens = prompt if call != "decode" else prompt[:, -1:]  # a decode step feeds one token per sequence
    got = host_side(tokens, call, HOST_SIDE_REPEATS)
    if not got:
        return None
    per = samples if (kind == "pp" or call == "decode") else ttft  # a stream's own work is once per generation
    median_ms = float(np.median(got["samples_ns"])) / 1e6
    call_ms = float(np.median(per)) / 1e6 if len(per) else None
    out = {k: v for k, v in got.items() if k != "samples_ns"}
    out.update(median_ms=median_ms, repeats=len(got["samples_ns"]), call="ttft" if streamed else call,
               call_median_ms=call_ms, share_of_call=median_ms / call_ms if call_ms else None)
    if not got.get("inside_timed_call", True):
        out["share_of_call"] = None  # done before the clock: not part of the figure
        out["would_be_share_of_call"] = median_ms / call_ms if call_ms else None
    return out


def run_generate(session: DecoderSession, prompts: PromptSet, batch_size: int, rule: StoppingRule,
                 load_s: float) -> Measurement:
    test = prompts.test
    raw = [prompts.batch(i, batch_size) for i in range(max(1, len(prompts.prompts) // batch_size))]
    streamed = owns_generation_loop(session)
    # an engine whose native prompt format is not token ids converts it here, before the clock (CTranslate2)
    prepare = getattr(session, "prepare_prompt", None) if streamed else None
    inputs = [prepare(p) for p in raw] if prepare else raw
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

    details = {**session.details}
    start_peak_window(details)  # the peak covers warm-up and measurement, as in every scenario
    warm_end = _clock() + int(rule.warmup_s * 1e9)
    n = 0
    while n < max(1, rule.min_warmup) or _clock() < warm_end:
        once(inputs[n % len(inputs)])
        n += 1

    samples: list[int] = []
    ttft: list[int] = []
    steps: list[int] = []
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
            steps.append(len(got[1]))
        if _clock() >= stop_at and len(samples) >= rule.min_samples:
            break
    wall = time.perf_counter() - started
    peak = peak_rss_mb()
    details.update({"test": test.name, "prompt_len": test.prompt_len, "gen_len": test.gen_len,
                    "timing": "stream() yields" if streamed else "prefill()/decode() calls",
                    "timed_call": timed_call(session, test.kind, streamed),
                    "generations" if test.kind == "tg" else "prefills": i})
    if test.kind == "pp":
        # an engine owning its generation loop cannot prefill without generating: its sample is a TTFT
        details["pp_timed_as"] = "ttft" if streamed else "prefill"
    if ttft:
        details["ttft_ns"] = ttft
        details["generation_steps"] = steps  # decode samples per generation (gen_len - 1 each)
    host = measure_host_side(session, test.kind, streamed, raw[0], samples, ttft)
    if host:
        details["host_side"] = host
    return Measurement(
        worker_samples=[np.asarray(samples, dtype=np.int64)],
        items_per_call=batch_size,
        tokens_per_item=float(test.prompt_len if test.kind == "pp" else 1),
        load_s=load_s,
        peak_rss_mb=peak,
        executed_precision=session.executed_precision,
        wall_s=wall,
        details=details,
    )


class Generate(Scenario):
    """Decoders (LLMs), llama-bench's tests: pp<N> prefill tokens/s, tg<N> decode tokens/s with TTFT and ITL.
    The grid's workloads are the tests; one session (--threads) per job."""

    name = "generate"
    model_kinds = ("decoder",)
    default = True
    judged_on = "tokens"
    uses_roofline = True

    def cells(self, grid: Grid, settings=None) -> list[Cell]:
        return [Cell(engine, precision, self.name, test, batch, 1, threads)
                for engine, precision in itertools.product(grid.engines, grid.precisions)
                for threads in grid.threads or [grid.cores]
                for batch in grid.batch_sizes for test in grid.workloads]

    def measure(self, run: CellRun) -> Measurement:
        """The fidelity against the reference is computed once per job, before timing."""
        session, load_s, load_peak = run.shared_session()
        if not isinstance(session, DecoderSession):
            raise TypeError(f"{run.cell.engine} does not run decoder (LLM) models: its load gave a "
                            f"{type(session).__name__}")
        known = run.cache.setdefault("fidelity", {})
        if not run.reused_fidelity(DECODER_REFERENCE):
            reference = (run.references or {}).get(DECODER_REFERENCE)
            try:
                known[DECODER_REFERENCE] = compare_decoder(session, reference, run.precision) if reference else None
            except NotImplementedError as e:
                known[DECODER_REFERENCE] = {"metric": "top1_agreement", "value": None, "ok": False,
                                            "threshold": None, "error": str(e)}
        m = run_generate(session, run.workload, run.cell.batch_size, run.rule, load_s)
        m.fidelity = known[DECODER_REFERENCE]
        m.details["load_peak_rss_mb"] = round(load_peak, 1)
        return m

    def table(self, result) -> str:
        return "decoders"

    def figures(self, cell: Cell, measurements: list[Measurement], details: dict) -> dict:
        """pp -> prefill tokens/s, or, for an engine that cannot prefill without generating (timed as a time to
        first token), ttft_ms and no prefill figure; tg -> decode tokens/s (with its share of the memory
        roofline), TTFT, ITL."""
        m0 = measurements[0]
        groups = [m.worker_samples[0] for m in measurements]
        if m0.details.get("test", cell.workload).startswith("pp"):
            if m0.details.get("pp_timed_as") == "ttft":
                return {"ttft_ms": summarize(None, [np.asarray(g) / 1e6 for g in groups]).to_dict()}
            return {"prefill_tokens_per_s": rate_summary(groups, m0.items_per_call * m0.tokens_per_item)}
        decode = rate_summary(groups, m0.items_per_call)
        speed = details.get("machine_speed") or {}
        decode["roofline"] = decode_roofline(decode["median"], m0.items_per_call, details.get("model_params") or 0,
                                             m0.executed_precision, m0.details, speed.get("bandwidth_gbs"))
        ttft = [np.asarray(m.details.get("ttft_ns") or [], dtype=np.float64) for m in measurements]
        return {"decode_tokens_per_s": decode,
                "itl_ms": summarize(None, [np.asarray(g) / 1e6 for g in groups]).to_dict(),
                "ttft_ms": summarize(None, [g / 1e6 for g in ttft]).to_dict() if any(g.size for g in ttft) else None}

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        """A tg test decodes after a prompt of its context length (seq_len); --workload keeps the one test."""
        gen = ["--gen-len", result.workload[2:]] if result.workload.startswith("tg") else []
        return ["--prompt-len", str(result.seq_len), *gen, "--workload", result.workload, "--batch-size",
                str(result.batch_size), "--threads", str(result.threads)]


__all__ = ["Generate", "run_generate", "owns_generation_loop", "timed_call", "measure_host_side", "HOST_SIDE_REPEATS"]
