"""Shared fixtures: the real MiniLM, its workloads, and the torch fp32 reference embeddings."""

from __future__ import annotations

import itertools
import os
import re

import pytest

from enginebench.models import resolve_model
from enginebench.workloads import build_workload
from helpers.sessions import embed, load_session


_MODULE_MARKS = re.compile(r"^pytestmark\s*=\s*(.+)$", re.M)


def pytest_ignore_collect(collection_path, config):
    """Leave a test file unimported when `-m` selects none of its tests whatever marks they add: its module-level
    `pytestmark` rules them all out (an engine file under `make test-fast`, a serial file in the parallel pass).
    Its top-level imports (torch, jax, ray, ...) then cost nothing where its tests would be deselected anyway.
    Every combination of the other marks a test could add is tried, so no selectable test is lost."""
    expr = config.option.markexpr
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    try:
        from _pytest.mark.expression import Expression

        compiled = Expression.compile(expr)
    except (ImportError, SyntaxError, AttributeError):  # pytest's own parser changed: import as usual
        return None
    found = _MODULE_MARKS.search(collection_path.read_text())
    if not found:
        return None
    marks = set(re.findall(r"pytest\.mark\.(\w+)", found.group(1)))
    declared = {line.split(":")[0].strip() for line in config.getini("markers")}
    others = sorted((declared | set(re.findall(r"\w+", expr))) - {"and", "or", "not"} - marks)
    for n in range(len(others) + 1):
        for extra in itertools.combinations(others, n):
            present = marks | set(extra)
            if compiled.evaluate(lambda name, **kwargs: name in present):
                return None
    return True


def pytest_collection_modifyitems(config, items):
    """Under `make test`'s two workers (pytest-xdist, `--dist loadfile --no-loadscope-reorder`) each test file
    goes whole to the next free worker in this order: the files that load a real engine or model (a test marked
    slow or engine) first, the quick ones last, so the two finish together instead of one starting a
    minutes-long file while the other runs out of work (xdist's own order, most tests first, put the heaviest
    files, which hold few tests, last)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("engine")}
    items.sort(key=lambda item: item.path not in heavy)  # stable: a file's tests stay together, in their order


# Every result the suite builds (here and in the processes it starts, which inherit this) holds only keys its
# fields declare (store/shapes.py): a figure added without its declaration fails the tests.
os.environ.setdefault("ENGINEBENCH_STRICT_SHAPES", "1")


def pytest_configure(config):
    """`ENGINEBENCH_CPU_FEATURES=avx2 make test`: the whole suite as an AVX2-only machine would run it, the
    libraries loaded in this process capped as the measuring processes are."""
    from enginebench.measure import cpu_features

    cpu_features.apply_kernel_caps()
    capture = config.pluginmanager.getplugin("capturemanager")
    # and where the CPUID mask runs, this process sees the smaller CPU too: pytest starts again under it
    cpu_features.reexec_masked(before_exec=capture.stop_global_capturing if capture else None)


# `make test` (and so CI) runs with everything the README installs: there a test skipped for want of an
# importable module hides a broken install, so it fails instead. A partial install (pytest run by hand) skips.
REQUIRE_ALL = os.environ.get("ENGINEBENCH_REQUIRE_ALL") == "1"


def required(why: str):
    """Skip for a missing part of the install, or fail under ENGINEBENCH_REQUIRE_ALL=1 (`make test`)."""
    if REQUIRE_ALL:
        pytest.fail(f"{why} (ENGINEBENCH_REQUIRE_ALL=1: `make test` installs everything, so this is a broken "
                    "install, not a skip)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def require():
    """`require(why)`: skip for a missing part of the install, fail under `make test` (see `required`)."""
    return required


def _failed_for_a_missing_module(report) -> None:
    message = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if REQUIRE_ALL and report.skipped and "could not import" in message:
        report.outcome = "failed"
        report.longrepr = (f"{message}: ENGINEBENCH_REQUIRE_ALL=1 (`make test`) installs every extra, so a "
                           "module that does not import is a broken install, not a skip")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _failed_for_a_missing_module(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _failed_for_a_missing_module(outcome.get_result())


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Artifacts (ONNX exports, conversions) go to a per-session cache unless one is given (`make test` gives its
    two pytest passes one). pytest-xdist's workers share one: their base folders (popen-gwN) share a parent, and
    an artifact being built by one worker is waited for by the other (enginebench.models.artifacts)."""
    if "ENGINEBENCH_CACHE" not in os.environ:
        base = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            base = base.parent
        cache = base / "cache"
        cache.mkdir(exist_ok=True)
        os.environ["ENGINEBENCH_CACHE"] = str(cache)
    yield


CPU_FEATURE_SETS = ("native", "avx2")  # this machine's own features, and an AVX2-only machine of this kind


@pytest.fixture(params=CPU_FEATURE_SETS)
def cpu_features(request, monkeypatch):
    """For tests whose outcome depends on the CPU: run once with the machine's own features and once acting as an
    AVX2-only CPU (ENGINEBENCH_CPU_FEATURES=avx2), so an AVX-512 machine fails what an AVX2 one would. Yields
    the CpuFeatures the product reads; expectations come from it, never from a static list. The kernel caps
    the product sets for the processes it starts are undone afterwards."""
    from enginebench.measure import cpu_features as features

    caps = set(features.ENV_KEYS)
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
