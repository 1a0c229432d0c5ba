"""Workloads: deterministic token inputs from a seed, identical for every engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

from enginebench.errors import UsageError
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.corpus import DEFAULT_CORPUS, corpus_digest, read_corpus
from enginebench.workloads.tokenize import encode_fixed, load_tokenizer

WORKLOADS = ("corpus", "titles")
#: fixed: every batch padded to seq_len; dynamic: each batch cut to its longest real input
PADDINGS = ("fixed", "dynamic")
TITLES_SEQ_LEN = 16  # the titles are ~13 tokens; padded to one fixed length
POOL_SIZE = 256  # distinct corpus documents drawn per run
FIDELITY_ITEMS = 32  # inputs compared against the reference


def titles() -> list[str]:
    text = resources.files("enginebench.workloads").joinpath("titles.txt").read_text(encoding="utf-8")
    return [t for t in text.splitlines() if t.strip()]


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    seed: int
    seq_len: int
    source: str  # corpus file, "python-docs", or "titles"
    digest: str | None = None  # the source's text (corpus_digest); None in runs stored before it was recorded
    padding: str = "fixed"  # PADDINGS; runs stored before --padding existed padded every batch to seq_len

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WorkloadData:
    spec: WorkloadSpec
    pool: TokenBatch  # every distinct input, [items, seq_len]

    @property
    def dynamic_padding(self) -> bool:
        return self.spec.padding == "dynamic"

    def batch(self, index: int, batch_size: int) -> TokenBatch:
        """The index-th batch: consecutive pool items, wrapping around."""
        return self.rows((index * batch_size + np.arange(batch_size)) % self.pool.size)

    def rows(self, rows) -> TokenBatch:
        """The pool items at `rows` as one batch (what a server concatenates from queued requests), padded as
        the workload says."""
        batch = self.pool.take(rows)
        return batch.trimmed() if self.dynamic_padding else batch

    def batches(self, batch_size: int, count: int = 8) -> list[TokenBatch]:
        """A few distinct batches to cycle through while measuring (built before timing starts)."""
        distinct = max(1, min(count, self.pool.size // batch_size))
        return [self.batch(i, batch_size) for i in range(distinct)]

    def fidelity_inputs(self) -> TokenBatch:
        return self.batch(0, min(FIDELITY_ITEMS, self.pool.size))


def build_workload(name: str, model_path: str, *, seq_len: int = 128, seed: int = 0,
                   corpus: str = DEFAULT_CORPUS, max_positions: int = 512, padding: str = "fixed") -> WorkloadData:
    if padding not in PADDINGS:
        raise UsageError(f"unknown --padding {padding!r}: use one of {', '.join(PADDINGS)}")
    tokenizer = load_tokenizer(model_path)
    if name == "corpus":
        if not 2 <= seq_len <= max_positions:
            raise UsageError(f"--seq-len {seq_len} is out of range: the model takes 2 to {max_positions} tokens")
        docs = read_corpus(corpus)
        rng = np.random.default_rng(seed)
        picks = rng.choice(len(docs), size=POOL_SIZE, replace=len(docs) < POOL_SIZE)
        pool = encode_fixed(tokenizer, [docs[i] for i in picks], seq_len)
        return WorkloadData(WorkloadSpec(name, seed, seq_len, corpus, corpus_digest(docs), padding), pool)
    if name == "titles":
        texts = titles()
        pool = encode_fixed(tokenizer, texts, TITLES_SEQ_LEN)
        return WorkloadData(WorkloadSpec(name, seed, TITLES_SEQ_LEN, "titles", corpus_digest(texts), padding),
                            pool)
    raise UsageError(f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)}")


__all__ = ["WORKLOADS", "PADDINGS", "TokenBatch", "WorkloadSpec", "WorkloadData", "build_workload", "titles", "DEFAULT_CORPUS"]
