"""Calibration inputs for static int8: corpus documents kept apart from every input a run measures.

Static quantization fixes each activation's scale from sample inputs. Calibrated on the measured inputs, the
fidelity check would score the model on the very text its scales were fitted to. So the calibration set is
drawn from the corpus's documents whose token ids differ from every measured input (compared with the pools
the run really measures, not recomputed from assumptions), in an order seeded apart from the measurement's
draw. With the default corpus (281 documents, 256 of them measured) that leaves a couple of dozen documents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from enginebench.errors import UsageError
from enginebench.workloads import DEFAULT_CORPUS, WorkloadData, build_workload
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.corpus import read_corpus
from enginebench.workloads.tokenize import encode_fixed, load_tokenizer

CALIBRATION_ITEMS = 64  # at most; NNCF's and ONNX Runtime's examples calibrate on a few dozen to 300 inputs
DEFAULT_SEQ_LEN = 128
_STREAM = 0xCA11B  # the calibration order's random stream: numpy rng((seed, _STREAM)), apart from the pool's rng(seed)


@dataclass(frozen=True)
class CalibrationSet:
    batch: TokenBatch  # [items, seq_len], one calibration input per row
    source: str  # the corpus the documents came from
    seed: int
    documents_examined: int  # corpus documents tokenized to find these
    documents_excluded: int  # of those, equal to a measured input or to an earlier calibration input
    kept_apart_from: str  # the measured inputs, in words

    @property
    def size(self) -> int:
        return self.batch.size

    def identity(self) -> str:
        """Digest of the token ids: what a cached calibrated artifact is keyed by."""
        digest = hashlib.sha256()
        for array in (self.batch.input_ids, self.batch.attention_mask, self.batch.token_type_ids):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        return digest.hexdigest()[:24]

    def feeds(self, input_names: list[str]) -> list[dict[str, np.ndarray]]:
        """One feed dict (batch of 1) per calibration input, by the graph's input names."""
        arrays = self.batch.as_dict()
        return [{name: arrays[name][i:i + 1] for name in input_names} for i in range(self.size)]

    def record(self) -> dict:
        return {"items": self.size, "seq_len": self.batch.seq_len, "source": self.source, "seed": self.seed,
                "selection": "corpus documents whose token ids equal no measured input, in an order seeded "
                             f"apart from the measurement's (numpy rng(({self.seed}, {_STREAM:#x})))",
                "documents_examined": self.documents_examined, "documents_excluded": self.documents_excluded,
                "kept_apart_from": self.kept_apart_from, "identity": self.identity()}


def calibration_set(model_path: str, measured: Iterable[WorkloadData] | None = None, *,
                    items: int = CALIBRATION_ITEMS) -> CalibrationSet:
    """Up to `items` calibration inputs from the corpus of the measured corpus workload (its seed and length),
    none equal to an input of any `measured` workload. `measured` None: the default corpus workload (seed 0,
    128 tokens) is assumed to be what is measured, and the record says so."""
    assumed = measured is None
    measured = [build_workload("corpus", model_path)] if measured is None else list(measured)
    corpora = [w for w in measured if w.spec.name == "corpus"]
    spec = corpora[0].spec if corpora else None
    source = spec.source if spec else DEFAULT_CORPUS
    seq_len = spec.seq_len if spec else DEFAULT_SEQ_LEN
    seed = spec.seed if spec else (measured[0].spec.seed if measured else 0)
    taken = {row.tobytes() for w in measured if w.pool.seq_len == seq_len for row in w.pool.input_ids}
    measured_count = sum(w.pool.size for w in measured)
    apart = ", ".join(f"{w.spec.name} ({w.pool.size} inputs, seed {w.spec.seed})" for w in measured) or "nothing"
    if assumed:
        apart += " (assumed: the session was not told the run's workloads, so the defaults were set apart)"

    docs = read_corpus(source)
    order = np.random.default_rng((seed, _STREAM)).permutation(len(docs))
    tokenizer = load_tokenizer(model_path)
    rows: list[int] = []
    kept: list[TokenBatch] = []
    examined = 0
    for start in range(0, len(docs), 4 * items):  # tokenize in chunks: a large corpus is not encoded whole
        chunk = encode_fixed(tokenizer, [docs[i] for i in order[start:start + 4 * items]], seq_len)
        for r in range(chunk.size):
            examined += 1
            key = chunk.input_ids[r].tobytes()
            if key not in taken:
                taken.add(key)
                kept.append(chunk)
                rows.append(r)
            if len(rows) == items:
                break
        if len(rows) == items:
            break
    if not rows:
        raise UsageError(f"corpus {source} has no document left for calibration once the {measured_count} "
                         "measured inputs are set aside: give --corpus a file with more documents")
    batch = TokenBatch(*(np.stack([getattr(b, f)[r] for b, r in zip(kept, rows)])
                         for f in ("input_ids", "attention_mask", "token_type_ids")))
    return CalibrationSet(batch, source, seed, examined, examined - len(rows), apart)


__all__ = ["CALIBRATION_ITEMS", "CalibrationSet", "calibration_set"]
