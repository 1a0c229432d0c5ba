"""The fidelity reference of a run: the reference engine's fp32 outputs on the run's fidelity inputs, computed
once in a child of its own and kept in the artifact cache (models/artifacts.py), so the next run of the same
model on the same inputs compares with the same numbers without loading the reference engine again.

A cached reference is found by everything its numbers depend on: the reference engine, its library's version
and its default options, the thread count it ran with, the model (every field of its ModelSpec: its files'
digest, a graph cut), and the exact inputs (each array's dtype, shape and bytes). Anything else gives another
key, and the reference is computed again.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import asdict, fields, is_dataclass

import numpy as np

from enginebench.engines import engine_class
from enginebench.measure.llm_fidelity import reference_data
from enginebench.models.artifacts import artifact_key, cached_artifact, finished_artifact
from enginebench.plan import Job
from enginebench.scenarios.base import DECODER_REFERENCE

FORMAT = "1"  # what the stored file holds; bump it when reference_outputs changes what it computes
GREEDY_PROMPTS = 2  # prompts the reference generates from for greedy agreement
_FILE = "reference.pkl"


def reference_inputs(job: Job) -> dict:
    """What the reference pass computes from. Encoders: {workload: TokenBatch} of each workload's fidelity
    inputs; decoders: the fidelity token rows, the greedy prompts and how many tokens to generate."""
    if job.model.kind != "decoder":
        return {name: w.fidelity_inputs() for name, w in job.workloads.items()}
    sets = list(job.workloads.values())
    tg = next((p for p in sets if p.test.kind in ("tg", "pg")), None)
    source = tg or sets[0]
    new_tokens = tg.test.gen_len if tg else 16
    prompt_len = min(source.test.prompt_len, max(1, job.model.max_positions - new_tokens))
    return {"fidelity_ids": source.fidelity_ids, "greedy_prompt": source.prompts[:GREEDY_PROMPTS, :prompt_len],
            "new_tokens": new_tokens}


def reference_outputs(session, job: Job, inputs: dict) -> dict:
    """The reference's outputs (what the child sends the parent): encoders {workload: embeddings}; decoders
    {DECODER_REFERENCE: llm_fidelity.reference_data}."""
    if job.model.kind == "decoder":
        return {DECODER_REFERENCE: reference_data(session, inputs["fidelity_ids"], inputs["greedy_prompt"],
                                                  inputs["new_tokens"])}
    return {name: session.run(session.prepare(batch)) for name, batch in inputs.items()}


def reference_key(job: Job, inputs: dict) -> str | None:
    """The cache key of `job`'s reference on `inputs`, or None when the engine's version is unknown."""
    cls = engine_class(job.engine)
    version = cls.version()
    if version is None:
        return None
    inputs_digest = hashlib.sha256()
    _digest(inputs, inputs_digest)
    return artifact_key(FORMAT, job.engine, version, job.precision, str(job.threads),
                        repr(cls.make_options(job.threads, dict(job.options))),
                        repr(sorted(asdict(job.model).items())), inputs_digest.hexdigest())


def _digest(value, h) -> None:
    """Feed `value` into `h` by content: arrays by dtype, shape and bytes, containers in a fixed order."""
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"array {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(value, dict):
        for k in sorted(value):
            h.update(f"key {k!r}".encode())
            _digest(value[k], h)
    elif is_dataclass(value):
        h.update(type(value).__name__.encode())
        _digest({f.name: getattr(value, f.name) for f in fields(value)}, h)
    elif isinstance(value, (list, tuple)):
        h.update(f"seq {len(value)}".encode())
        for v in value:
            _digest(v, h)
    else:
        h.update(f"{type(value).__name__} {value!r}".encode())


def cached_reference(key: str | None) -> dict | None:
    """The stored reference under `key`, or None (never stored, or unreadable)."""
    folder = finished_artifact("reference", key) if key else None
    if folder is None:
        return None
    try:
        with open(folder / _FILE, "rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError):
        return None


def store_reference(key: str | None, outputs: dict) -> None:
    """Keep `outputs` under `key` (written whole or not at all); a cache that cannot be written costs only the
    next run's reference pass."""
    if key is None:
        return

    def write(folder):
        with open(folder / _FILE, "wb") as f:
            pickle.dump(outputs, f, protocol=pickle.HIGHEST_PROTOCOL)

    try:
        cached_artifact("reference", key, write)
    except OSError:
        pass


__all__ = ["reference_inputs", "reference_outputs", "reference_key", "cached_reference", "store_reference",
           "GREEDY_PROMPTS"]
