"""torch.compile of the sentence encoder: fidelity vs eager fp32, compiles kept out of the timed calls."""

import pytest

from helpers.sessions import load_session
from enginebench.measure.fidelity import compare_embeddings
from enginebench.workloads.batch import TokenBatch

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


def _rows(batch: TokenBatch, count: int) -> TokenBatch:
    return TokenBatch(batch.input_ids[:count], batch.attention_mask[:count], batch.token_type_ids[:count])


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_inductor_matches_torch(minilm, corpus, reference, precision):
    inputs = corpus.fidelity_inputs()
    # compile the fidelity shape in load(), so the run below compiles nothing
    session = load_session("torch-compile", minilm, precision, warmup_batch=inputs.size, warmup_seq=inputs.seq_len)
    assert session.details["load_compile_s"] > 0 and "inductor" in session.details["compile"]
    prepared = session.prepare(inputs)
    assert "compile_s_by_shape" not in session.details
    f = compare_embeddings(session.run(prepared), reference, precision)
    print(f"torch-compile {precision}: min cosine {f['value']:.6f}")
    assert f["ok"] and session.executed_precision == precision


@pytest.mark.slow
def test_each_new_shape_compiles_in_prepare_not_in_run(minilm, corpus, reference):
    import torch._dynamo

    inputs = corpus.fidelity_inputs()
    session = load_session("torch-compile", minilm, backend="aot_eager", warmup_batch=2, warmup_seq=inputs.seq_len)
    torch._dynamo.utils.counters.clear()
    prepared = session.prepare(_rows(inputs, 4))  # a shape load() did not compile
    assert list(session.details["compile_s_by_shape"]) == ["4x128"]
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert frames >= 1  # prepare() really compiled
    out = session.run(prepared)
    session.prepare(_rows(inputs, 4))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == frames  # neither run nor a known shape compiles
    assert list(session.details["compile_s_by_shape"]) == ["4x128"]
    assert compare_embeddings(out, reference[:4], "fp32")["ok"]


def test_unknown_mode_or_backend_is_refused_with_the_allowed_values(minilm):
    with pytest.raises(ValueError, match="mode takes one of"):  # by the options' check, before any load
        load_session("torch-compile", minilm, mode="fastest")
    with pytest.raises(ValueError, match="backend takes one of .*inductor"):
        load_session("torch-compile", minilm, backend="no-such-backend")


def test_int8_is_not_offered_with_a_reason():
    from enginebench.engines import engine_class

    assert "does not offer int8" in engine_class("torch-compile").why_not_precision("int8")
