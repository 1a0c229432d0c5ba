"""Shared fixtures: the real MiniLM, its workloads, and the torch fp32 reference embeddings."""

from __future__ import annotations

import os

import pytest

from enginebench.models import resolve_model
from enginebench.workloads import build_workload
from helpers.sessions import embed, load_session


def pytest_configure(config):
    """`ENGINEBENCH_CPU_FEATURES=avx2 make test`: the whole suite as an AVX2-only machine would run it, the
    libraries loaded in this process capped as the measuring processes are."""
    from enginebench.measure import cpu_features

    cpu_features.apply_kernel_caps()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Artifacts (ONNX exports, conversions) go to a per-session cache unless one is given."""
    if "ENGINEBENCH_CACHE" not in os.environ:
        os.environ["ENGINEBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield


CPU_FEATURE_SETS = ("native", "avx2")  # this machine's own features, and an AVX2-only machine of this kind


@pytest.fixture(params=CPU_FEATURE_SETS)
def cpu_features(request, monkeypatch):
    """For tests whose outcome depends on the CPU: run once with the machine's own features and once acting as an
    AVX2-only CPU (ENGINEBENCH_CPU_FEATURES=avx2), so an AVX-512 machine fails what an AVX2 one would. Yields
    the CpuFeatures the product reads; expectations come from it, never from a static list. The kernel caps
    the product sets for the processes it starts are undone afterwards."""
    from enginebench.measure import cpu_features as features

    caps = set(features.kernel_caps(set()))
    saved = {k: os.environ.get(k) for k in caps}
    for key in caps:
        monkeypatch.delenv(key, raising=False)
    if request.param == "native":
        monkeypatch.delenv(features.ENV, raising=False)
    else:
        monkeypatch.setenv(features.ENV, request.param)
    yield features.current()
    for key, value in saved.items():  # apply_kernel_caps writes os.environ directly
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def minilm():
    return resolve_model("minilm")


@pytest.fixture(scope="session")
def corpus(minilm):
    return build_workload("corpus", minilm.path, seq_len=128, seed=0)


@pytest.fixture(scope="session")
def titles(minilm):
    return build_workload("titles", minilm.path)


@pytest.fixture(scope="session")
def reference(minilm, corpus):
    """torch fp32 sentence embeddings of the corpus workload's fidelity inputs."""
    session = load_session("torch", minilm)
    return embed(session, corpus.fidelity_inputs())


@pytest.fixture(scope="session")
def tiny_llama():
    """A few-MB synthetic Llama folder (models/llama_synthetic.py) as a decoder ModelSpec."""
    from helpers.tiny_llama import tiny_llama_spec

    return tiny_llama_spec()


@pytest.fixture(scope="session")
def llama_reference(tiny_llama):
    """transformers LlamaForCausalLM fp32 on the tiny Llama: the logits every decoder engine is checked against."""
    from helpers.tiny_llama import TransformersReference

    return TransformersReference(tiny_llama)
