"""The fidelity reference is computed once per (engine, version, model, inputs) and read back from the artifact
cache after that: a second launcher on the same inputs starts no reference child and compares with the same
numbers; anything the numbers depend on gives another key."""

import dataclasses

import numpy as np
import pytest
from helpers.measurements import measurement

from enginebench.engines import engine_class
from enginebench.execution import references
from enginebench.execution.local import LocalLauncher
from enginebench.execution.messages import Done, Measured, References, Started
from enginebench.execution.references import reference_inputs, reference_key
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Job, Plan
from enginebench.workloads.prompts import DecoderTest, build_prompt_sets

RULE = StoppingRule(duration_s=0, min_samples=1)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _launcher(minilm, workloads, started):
    """A launcher whose children are scripted: the reference child sends embeddings made from the inputs it was
    given (a sum per row, so other inputs give other numbers); the measuring child one measurement."""
    plan = Plan(minilm, workloads, [Cell("onnxruntime", "fp32", "latency", "titles", 1, 1, 1)], RULE, {},
                timeout_s=60)
    launcher = LocalLauncher(plan)

    def scripted(job, timed_out):
        started.append("reference" if job.reference_only else job.engine)
        if job.reference_only:
            yield References({name: b.input_ids.sum(axis=1, keepdims=True).astype(np.float32)
                              for name, b in reference_inputs(job).items()})
            yield Done()
        else:
            yield from [Started(0), Measured(0, measurement()), Done()]

    launcher._child_messages = scripted
    return launcher


def test_a_second_run_on_the_same_inputs_reads_the_reference_and_starts_no_child_for_it(own_cache, minilm, titles,
                                                                                         corpus):
    first_children, second_children, other_children = [], [], []
    first = _launcher(minilm, {"titles": titles}, first_children)._references()
    second = _launcher(minilm, {"titles": titles}, second_children)._references()
    assert first_children == ["reference"] and second_children == []
    assert set(first) == set(second) == {"titles"} and np.array_equal(first["titles"], second["titles"])
    assert len(list((own_cache / "reference").iterdir())) == 2  # the reference's folder and its lock
    # other inputs (a workload more) are another reference: computed, not read
    other = _launcher(minilm, {"titles": titles, "corpus": corpus}, other_children)._references()
    assert other_children == ["reference"] and set(other) == {"titles", "corpus"}


def test_a_run_after_a_failed_reference_computes_it_again(own_cache, minilm, titles):
    plan = Plan(minilm, {"titles": titles}, [], RULE, {}, timeout_s=60)
    failing = LocalLauncher(plan)
    failing._child_messages = lambda job, timed_out: iter([Done()])  # a child that sent nothing
    assert failing._references() is None
    started = []
    assert _launcher(minilm, {"titles": titles}, started)._references() is not None
    assert started == ["reference"]


def _job(model, workloads, **changes) -> Job:
    job = Job("torch", "fp32", 2, {}, model, workloads, RULE, reference_only=True)
    return dataclasses.replace(job, **changes)


def test_the_key_follows_everything_the_reference_depends_on(minilm, titles, monkeypatch):
    base = _job(minilm, {"titles": titles})
    key = reference_key(base, reference_inputs(base))
    assert key == reference_key(base, reference_inputs(_job(minilm, {"titles": titles})))  # same content, same key
    inputs = reference_inputs(base)
    changed = dict(inputs)
    ids = inputs["titles"].input_ids.copy()
    ids[0, 1] += 1
    changed["titles"] = dataclasses.replace(inputs["titles"], input_ids=ids)
    others = {
        "one token": reference_key(base, changed),
        "threads": reference_key(_job(minilm, {"titles": titles}, threads=1), inputs),
        "a graph cut": reference_key(_job(dataclasses.replace(minilm, until="/encoder/layer.0/Add"),
                                          {"titles": titles}), inputs),
        "the model's files": reference_key(_job(dataclasses.replace(minilm, content_hash="0" * 24),
                                                {"titles": titles}), inputs),
        "an option": reference_key(_job(minilm, {"titles": titles}, options={"attention": "eager"}), inputs),
        "another engine": reference_key(_job(minilm, {"titles": titles}, engine="onnxruntime"), inputs),
    }
    cls = engine_class("torch")
    monkeypatch.setattr(cls, "version", classmethod(lambda c: "0.0-other"))
    others["the library's version"] = reference_key(base, inputs)
    assert key not in others.values() and len(set(others.values())) == len(others), others
    monkeypatch.setattr(cls, "version", classmethod(lambda c: None))
    assert reference_key(base, inputs) is None  # an unknown version: never cached


def test_a_decoders_reference_is_keyed_by_its_prompts_and_length(tiny_llama):
    sets = build_prompt_sets(tiny_llama.path, [DecoderTest("tg", 8, 4)], max_positions=256)
    job = _job(tiny_llama, sets)
    inputs = reference_inputs(job)
    assert inputs["new_tokens"] == 4 and inputs["greedy_prompt"].shape == (references.GREEDY_PROMPTS, 8)
    longer = _job(tiny_llama, build_prompt_sets(tiny_llama.path, [DecoderTest("tg", 8, 6)], max_positions=256))
    assert reference_key(job, inputs) != reference_key(longer, reference_inputs(longer))
    assert reference_key(job, inputs) == reference_key(job, reference_inputs(_job(tiny_llama, sets)))
