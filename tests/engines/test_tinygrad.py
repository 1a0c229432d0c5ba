import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.measure.fidelity import compare_embeddings
from enginebench.models import resolve_model
from helpers.tiny_bert import make_tiny_bert, mixed_batch

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

pytest.importorskip("tinygrad")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm):
    return resolve_model(str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm.path)))


def _first(inputs, n: int):
    """The first n rows of a TokenBatch: tinygrad's CPU kernels run single-threaded, so each row costs."""
    from enginebench.workloads.batch import TokenBatch

    return TokenBatch(inputs.input_ids[:n], inputs.attention_mask[:n], inputs.token_type_ids[:n])


@pytest.mark.slow  # tinygrad generates and compiles every MiniLM kernel, then runs them 4 times (3 for TinyJit)
def test_tinygrad_fp32_matches_torch(minilm, corpus, reference):
    # 4 of the 32 fidelity inputs: the same kernels compile and run at an eighth of the cost (minutes on a busy
    # machine with all 32)
    session = load_session("tinygrad", minilm, "fp32")
    n = 4
    out = embed(session, _first(corpus.fidelity_inputs(), n))
    f = compare_embeddings(out, reference[:n], "fp32")
    print("tinygrad fp32 vs torch:", f, session.details)
    assert f["ok"] and f["max_abs_diff"] < 1e-4
    assert session.details["device"] == "CPU"


@pytest.mark.slow  # half-precision kernels run slowly on the CPU backend: 2 inputs take ~20 s, 8 took 60 s on AVX2
def test_tinygrad_fp16_is_close(minilm, corpus, reference):
    session = load_session("tinygrad", minilm, "fp16")
    n = 2
    out = embed(session, _first(corpus.fidelity_inputs(), n))
    f = compare_embeddings(out, reference[:n], "fp16")
    print("tinygrad fp16 vs torch:", f)
    assert f["ok"] and f["max_abs_diff"] > 1e-5  # really ran in fp16: not bit-close to fp32
    assert out.dtype == np.float32 and session.executed_precision == "fp16"


def test_tinygrad_reads_every_size_from_config_and_replays_the_jit(tiny):
    """A random BERT with other sizes, eps and three token types agrees with torch, also when TinyJit replays
    the kernels it captured in prepare() on a different batch of the same shape."""
    first, second = mixed_batch(seed=0), mixed_batch(seed=1)
    torch_session, tg = load_session("torch", tiny), load_session("tinygrad", tiny)
    tg.prepare(first)  # captures the kernels for this shape
    jit, inputs = tg.prepare(second)
    assert jit.captured is not None
    out = tg.run((jit, inputs))
    expected = torch_session.run(torch_session.prepare(second))
    f = compare_embeddings(out, expected, "fp32")
    print("tinygrad fp32 vs torch, tiny BERT:", f, tg.details)
    assert out.shape == (3, 48) and out.dtype == np.float32 and f["ok"] and f["max_abs_diff"] < 1e-4
    assert tg.details["compiled_shapes"] == [(3, 24)] and tg.details["device"] == "CPU"


def test_tinygrad_without_jit_gives_the_same_embeddings(tiny):
    batch = mixed_batch()
    jitted, plain = load_session("tinygrad", tiny), load_session("tinygrad", tiny, jit=False)
    np.testing.assert_allclose(plain.run(plain.prepare(batch)), jitted.run(jitted.prepare(batch)), atol=1e-6)
