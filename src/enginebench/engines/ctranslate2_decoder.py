"""CTranslate2 for Llama decoders: the reference folder converted once (models/ctranslate2_convert.py), run by `ctranslate2.Generator`.

CTranslate2 keeps its KV cache inside its decoding loop and exposes no step call that takes a caller's token,
so the session maps the DecoderSession contract onto what the library really offers:
- `stream(prompt, n)`: `generate_batch(include_prompt_in_result=False)` forwards the whole prompt at once to
  fill the cache (a real prefill), then decodes greedily with that cache; a callback on CTranslate2's thread
  records `step_times_ns` (one clock reading per step: the first is the time to first token, each later
  gap one decode step) and queues the tokens this iterator yields.
- `prefill(prompt)`: the same call with max_length=1, returning the last position's logits.
- `forward_logits(tokens)`: `forward_batch`, the logits of every position of a fresh sequence.
- `decode(token)`: not available (raises); the generate scenario times decoding through `stream`.
- `greedy_logits(prompt, n)`: the logits of each generated step (return_logits_vocab), so tests can check the
  cached decode path against a full forward.

generate_batch takes token strings, not ids. Mapping ids to strings is the caller's tokenization (a CTranslate2
user passes its tokenizer's tokens), so `prepare_prompt(ids)` does it before the clock, as every engine gets its
native inputs prepared before timing; `stream()` takes either prepared prompts or ids (then it converts them
itself, as fidelity checks do). `host_side()` times that conversion on the same prompt, for the record.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import time
import weakref
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.engines.ctranslate2_cpu import (ct2_executed_precision, ct2_quantization, load_reading_config,
                                                 session_details)
from enginebench.models.ctranslate2_convert import ctranslate2_model
from enginebench.models.spec import ModelSpec


# A Generator that has run a Python callback (stream() uses one) and is still alive when the interpreter
# finalizes aborts the process ("terminate called ... Resource deadlock avoided", CTranslate2 4.8: reproduced
# with a plain generate_batch(callback=...) and nothing else), after every result is in. Freeing the
# Generators at exit, before finalization, avoids it; the benchmark's child leaves with os._exit anyway.
_OPEN_SESSIONS: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _free_generators() -> None:
    for session in list(_OPEN_SESSIONS):
        session.close()


@dataclass(frozen=True)
class PreparedPrompt:
    """A prompt in generate_batch's own input format, made before timing (prepare_prompt)."""

    ids: np.ndarray  # [batch, n]
    strings: list[list[str]]

    def __len__(self) -> int:
        return len(self.strings)


class CTranslate2DecoderSession(DecoderSession):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "stream": "generate_batch(asynchronous=True, greedy, include_prompt_in_result=False) with a per-step Python "
                  "callback that reads the clock: pybind11's conversion of the prepared token-string lists and "
                  "their vocabulary lookup in C++, the prompt forwarded at once (all but its last token) into "
                  "the KV cache, then the C++ greedy loop (one decoder step per token, argmax, the callback under "
                  "the GIL); the ids -> token strings conversion is done before the clock (prepare_prompt)",
    }

    def __init__(self, generator, vocabulary: list[str], precision: str, details: dict):
        self.generator = generator
        self.vocabulary = vocabulary
        self.vocab_size = len(vocabulary)
        self.executed_precision = precision
        self.details = details
        _OPEN_SESSIONS.add(self)

    def close(self) -> None:
        self.generator = None  # frees the Generator (and its worker threads) now

    def _token_strings(self, tokens: np.ndarray) -> list[list[str]]:
        # generate_batch takes token strings only; ids map through the converted model's own vocabulary
        return [[self.vocabulary[i] for i in row] for row in self.checked_ids(tokens).tolist()]

    def prepare_prompt(self, prompt: np.ndarray) -> PreparedPrompt:
        """The prompt as generate_batch takes it (token strings): done before timing, like every engine's inputs."""
        return PreparedPrompt(np.asarray(prompt), self._token_strings(prompt))

    def host_side(self, tokens: np.ndarray, call: str, repeats: int = 7) -> dict | None:
        """The ids -> token strings conversion generate_batch needs, timed alone on the same prompt. It runs in
        prepare_prompt(), outside the timed call: recorded so its size is known."""
        if call != "stream":
            return None
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            self._token_strings(tokens)
            samples.append(time.perf_counter_ns() - t0)
        return {"what": "token ids -> token strings for generate_batch (Python, over the converted vocabulary)",
                "samples_ns": samples, "inside_timed_call": False,
                "where": "prepare_prompt(), before the clock"}

    def _generate(self, prompt, new_tokens: int, **kwargs):
        strings = prompt.strings if isinstance(prompt, PreparedPrompt) else self._token_strings(prompt)
        return self.generator.generate_batch(
            strings, max_length=new_tokens, include_prompt_in_result=False,
            end_token=[],  # never stop early: every run generates exactly new_tokens tokens
            beam_size=1, sampling_topk=1, **kwargs)

    def reset(self) -> None:
        pass  # every call starts a fresh sequence: the generator keeps no state between calls

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        results = self._generate(tokens, 1, return_logits_vocab=True)
        return np.stack([np.asarray(r.logits[0][0], dtype=np.float32) for r in results])

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        raise NotImplementedError("CTranslate2 has no decode step that takes the caller's token: "
                                  "its KV cache lives inside generate_batch; time decoding with stream()")

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        self._token_strings(tokens)  # validates the ids
        return np.array(self.generator.forward_batch(np.asarray(tokens).tolist()), dtype=np.float32)

    def greedy_logits(self, prompt: np.ndarray, new_tokens: int) -> tuple[np.ndarray, np.ndarray]:
        """Greedy continuation through the KV cache: (tokens [batch, n], logits [batch, n, vocab])."""
        results = self._generate(prompt, new_tokens, return_logits_vocab=True)
        tokens = np.array([r.sequences_ids[0] for r in results], dtype=np.int64)
        logits = np.array([[np.asarray(step) for step in r.logits[0]] for r in results], dtype=np.float32)
        return tokens, logits

    def stream(self, prompt, new_tokens: int) -> Iterator[np.ndarray]:
        """Greedy tokens as generated; `prompt` is ids [batch, n] or a PreparedPrompt (see prepare_prompt)."""
        batch = len(prompt)
        steps: queue.SimpleQueue = queue.SimpleQueue()
        stopped = False
        # CTranslate2 generates ahead of this iterator (asynchronously), so gaps between yields would time the
        # queue: the clock is read on CTranslate2's thread instead, once per step when its last row arrives
        marks: list[int] = []
        self.step_times_ns = marks
        rows_done: dict[int, int] = {}

        # The callback must not reference the session: CTranslate2's worker thread releases it after the call,
        # and if that release freed the session (so the Generator), the Generator's destructor would join the
        # thread it runs on ("terminate called ... Resource deadlock avoided").
        def on_step(step) -> bool:  # runs on CTranslate2's thread, once per sequence per step
            rows_done[step.step] = rows_done.get(step.step, 0) + 1
            if rows_done[step.step] == batch:
                marks.append(time.perf_counter_ns())
            steps.put((step.step, step.batch_id, step.token_id))
            return stopped  # True asks CTranslate2 to stop this sequence

        results = self._generate(prompt, new_tokens, asynchronous=True, callback=on_step)
        pending: dict[int, dict[int, int]] = {}
        try:
            for index in range(new_tokens):
                while len(pending.get(index, ())) < batch:
                    try:
                        step, row, token = steps.get(timeout=0.05)
                    except queue.Empty:
                        if all(r.done() for r in results):
                            for r in results:
                                r.result()  # raises the generator's error, if any
                            raise RuntimeError(f"CTranslate2 stopped after {index} of {new_tokens} tokens")
                        continue
                    pending.setdefault(step, {})[row] = token
                row_tokens = pending.pop(index)
                yield np.array([row_tokens[b] for b in range(batch)], dtype=np.int64)
        finally:
            stopped = True
            for r in results:
                r.result()


def load_ctranslate2_decoder(model: ModelSpec, precision: str, quantization: str | None, compute_type: str,
                             options) -> CTranslate2DecoderSession:
    """The engine (engines/ctranslate2.py) has checked that this CPU offers `compute_type`."""
    import ctranslate2

    folder, details = ctranslate2_model(model, quantization)  # the same cached conversion as encoders use
    generator = load_reading_config(lambda: ctranslate2.Generator(
        str(folder), device="cpu", compute_type=compute_type, intra_threads=options.threads,
        inter_threads=options.inter_threads))
    vocabulary = json.loads((folder / "vocabulary.json").read_text())
    details.update(compute_type=generator.compute_type, **session_details(generator.compute_type),
                   decode="greedy generate_batch with a per-step callback (no external KV-cache step in CTranslate2)",
                   # picks the GEMM backend (read once per process, at first use): on an AMD EPYC, SmolLM2 decode
                   # with CT2_USE_MKL=1 ran 2x (fp32) and 7x (int8) slower than with the default DNNL backend
                   ct2_use_mkl=os.environ.get("CT2_USE_MKL", "default (MKL on Intel CPUs only)"),
                   executed_precision_source="the loaded Generator's compute_type", threads_used=options.threads,
                   threads_source="requested (CTranslate2 does not report intra_threads back)")
    if precision == "int8":
        details["quantization"] = ct2_quantization(folder, generator.compute_type)
    return CTranslate2DecoderSession(generator, vocabulary, ct2_executed_precision(generator.compute_type), details)


__all__ = ["CTranslate2DecoderSession", "PreparedPrompt", "load_ctranslate2_decoder"]
