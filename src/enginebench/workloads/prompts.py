"""Decoder workloads: prompts of exactly N corpus tokens, tokenized with the model's tokenizer.json.

Every engine gets the same token ids (engines never tokenize), so prefill and decode do the same work
everywhere. A prompt is corpus documents, drawn by the seed, concatenated until there are enough tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from enginebench.errors import UsageError
from enginebench.workloads import WorkloadSpec
from enginebench.workloads.corpus import DEFAULT_CORPUS, corpus_digest, read_corpus
from enginebench.workloads.tokenize import load_tokenizer

PROMPT_COUNT = 8  # distinct prompts cycled through while measuring
FIDELITY_SEQUENCES = 2  # corpus sequences scored under teacher forcing against the reference
FIDELITY_TOKENS = 128
FIDELITY_SEED_OFFSET = 1_000_003  # fidelity text is drawn apart from the timed prompts
_TEST_NAME = re.compile(r"(pp|tg)[1-9][0-9]*")


def is_test_name(name: str) -> bool:
    """pp<N> or tg<N>: how `--workload` names one of the generate scenario's tests."""
    return _TEST_NAME.fullmatch(name) is not None


def corpus_token_rows(model_path: str, rows: int, length: int, seed: int = 0,
                      corpus: str = DEFAULT_CORPUS) -> np.ndarray:
    """[rows, length] int64 token ids: each row is documents drawn by the seed, concatenated, truncated."""
    tokenizer = load_tokenizer(model_path)
    docs = read_corpus(corpus)
    order = np.random.default_rng(seed).permutation(len(docs))
    out = np.empty((rows, length), dtype=np.int64)
    cursor = 0
    for row in range(rows):
        ids: list[int] = []
        for _ in range(len(docs)):
            ids += tokenizer.encode(docs[order[cursor % len(docs)]], add_special_tokens=False).ids
            cursor += 1
            if len(ids) >= length:
                break
        if len(ids) < length:
            raise UsageError(f"the corpus holds fewer than {length} tokens: give --corpus a longer text or a "
                             "smaller --prompt-len")
        out[row] = ids[:length]
    return out


@dataclass(frozen=True)
class DecoderTest:
    """One llama-bench style test: pp<N> times a prefill of N tokens, tg<N> times N decode steps."""

    kind: str  # "pp", "tg", or "pg": a whole request (prompt then generation) of the server scenario
    prompt_len: int  # tokens prefilled (for tg: the context the decode steps start from)
    gen_len: int  # tokens generated (tg, pg), 1 for pp

    @property
    def name(self) -> str:
        if self.kind == "pg":  # llama-bench's name for a prompt followed by a generation
            return f"pp{self.prompt_len}+tg{self.gen_len}"
        return f"pp{self.prompt_len}" if self.kind == "pp" else f"tg{self.gen_len}"


@dataclass(frozen=True)
class PromptSet:
    """What the generate scenario needs for one test; plays the part of WorkloadData in a decoder plan."""

    spec: WorkloadSpec  # name = the test's name, seq_len = prompt length
    test: DecoderTest
    prompts: np.ndarray  # [PROMPT_COUNT, prompt_len] int64
    fidelity_ids: np.ndarray  # [FIDELITY_SEQUENCES, FIDELITY_TOKENS] corpus text for teacher forcing

    def batch(self, index: int, batch_size: int) -> np.ndarray:
        rows = (index * batch_size + np.arange(batch_size)) % len(self.prompts)
        return np.ascontiguousarray(self.prompts[rows])


def decoder_tests(prompt_lens: list[int], gen_lens: list[int], max_positions: int) -> tuple[list[DecoderTest], list[str]]:
    """The pp and tg tests that fit the model's positions, and a reason for each one dropped.

    tg tests decode after a prompt of the smallest --prompt-len (what llama-bench calls depth)."""
    tests, dropped = [], []
    for n in prompt_lens:
        if n > max_positions:
            dropped.append(f"pp{n} skipped: the model takes at most {max_positions} positions")
        else:
            tests.append(DecoderTest("pp", n, 1))
    context = min(prompt_lens)
    for g in gen_lens:
        if context + g > max_positions:
            fit = max_positions - g
            if fit < 1:
                dropped.append(f"tg{g} skipped: the model takes at most {max_positions} positions")
                continue
            dropped.append(f"tg{g} decodes after {fit} prompt tokens, not {context}: "
                           f"the model takes at most {max_positions} positions")
            tests.append(DecoderTest("tg", fit, g))
        else:
            tests.append(DecoderTest("tg", context, g))
    return tests, dropped


def request_shapes(prompt_lens: list[int], gen_lens: list[int], max_positions: int) -> list[DecoderTest]:
    """The server scenario's requests: every prompt length x generation length that fits the model."""
    shapes = [DecoderTest("pg", p, g) for p in prompt_lens for g in gen_lens if p + g <= max_positions]
    if not shapes:
        raise UsageError(f"no request of --prompt-len + --gen-len fits the model's {max_positions} positions")
    return shapes


def build_prompt_sets(model_path: str, tests: list[DecoderTest], *, seed: int = 0, corpus: str = DEFAULT_CORPUS,
                      max_positions: int = 2048) -> dict[str, PromptSet]:
    fidelity_len = min(FIDELITY_TOKENS, max_positions)
    fidelity = corpus_token_rows(model_path, FIDELITY_SEQUENCES, fidelity_len, seed + FIDELITY_SEED_OFFSET, corpus)
    sets = {}
    digest = corpus_digest(read_corpus(corpus))
    for test in tests:
        prompts = corpus_token_rows(model_path, PROMPT_COUNT, test.prompt_len, seed, corpus)
        spec = WorkloadSpec(test.name, seed, test.prompt_len, corpus, digest)
        sets[test.name] = PromptSet(spec, test, prompts, fidelity)
    return sets


__all__ = ["DecoderTest", "PromptSet", "corpus_token_rows", "decoder_tests", "request_shapes", "build_prompt_sets"]
