"""Shared fixtures: the real MiniLM, its workloads, and the torch fp32 reference embeddings."""

from __future__ import annotations

import os

import pytest

from enginebench.engines import require_engine
from enginebench.models import resolve_model
from enginebench.workloads import build_workload


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Artifacts (ONNX exports, conversions) go to a per-session cache unless one is given."""
    if "ENGINEBENCH_CACHE" not in os.environ:
        os.environ["ENGINEBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


@pytest.fixture(scope="session")
def minilm():
    return resolve_model("minilm")


@pytest.fixture(scope="session")
def corpus(minilm):
    return build_workload("corpus", minilm.path, seq_len=128, seed=0)


@pytest.fixture(scope="session")
def titles(minilm):
    return build_workload("titles", minilm.path)


def embed(session, batch):
    """Sentence embeddings of one TokenBatch through an encoder session."""
    return session.run(session.prepare(batch))


def load_session(engine: str, model, precision: str = "fp32", threads: int = 2, **options):
    cls = require_engine(engine)
    return cls().load(model, precision, cls.make_options(threads, {k: str(v) for k, v in options.items()}))


@pytest.fixture(scope="session")
def reference(minilm, corpus):
    """torch fp32 sentence embeddings of the corpus workload's fidelity inputs."""
    session = load_session("torch", minilm)
    return embed(session, corpus.fidelity_inputs())


@pytest.fixture(scope="session")
def tiny_llama():
    """A few-MB synthetic Llama folder (models/llama_synthetic.py) as a decoder ModelSpec."""
    from tiny_llama import tiny_llama_spec

    return tiny_llama_spec()


@pytest.fixture(scope="session")
def llama_reference(tiny_llama):
    """transformers LlamaForCausalLM fp32 on the tiny Llama: the logits every decoder engine is checked against."""
    from tiny_llama import TransformersReference

    return TransformersReference(tiny_llama)
