"""torch fp32 on weights kept as a 16-bit checkpoint stores them (fp32_weights=stored): the float32 model's logits
in half its memory, and the fidelity reference of a decoder whose float32 weights do not fit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.sessions import load_session
from helpers.tiny_llama import prompt_ids

from enginebench.engines.torch_eager import TorchEngine
from enginebench.measure import memory

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


@pytest.fixture(scope="module")
def tiny_f16():
    """The tiny Llama stored in float16, as Llama checkpoints are distributed."""
    from enginebench.models.decoder_folder import synthetic_decoder
    from enginebench.models.llama_synthetic import TINY_LLAMA

    return synthetic_decoder(TINY_LLAMA, "tiny-llama-f16", dtype="float16")


def test_fp32_on_stored_weights_computes_what_the_float32_model_computes(tiny_f16):
    full = load_session("torch", tiny_f16, "fp32", threads=1)
    stored = load_session("torch", tiny_f16, "fp32", threads=1, fp32_weights="stored")
    linears = [m for m in stored.model.modules() if hasattr(m, "compute_dtype")]
    assert linears and {str(m.weight.dtype) for m in linears} == {"torch.float16"}  # held as stored
    assert stored.executed_precision == "fp32" and "as stored" in stored.details["weights"]
    ids = prompt_ids(tiny_f16, batch=2, length=40, seed=3)
    reference = full.forward_logits(ids)
    np.testing.assert_allclose(stored.forward_logits(ids), reference, rtol=0, atol=1e-5)
    # the cached loop too: its KV cache holds float32 keys and values
    prompt = ids[:, :16]
    assert [t.tolist() for t in stored.stream(prompt, 8)] == [t.tolist() for t in full.stream(prompt, 8)]
    # the bound is one a 16-bit computation does not meet: bf16 arithmetic on the same weights misses it
    bf16 = load_session("torch", tiny_f16, "bf16", threads=1)
    assert np.abs(bf16.forward_logits(ids) - reference).max() > 1e-3


def test_stored_weights_need_a_16_bit_decoder(tiny_llama, minilm):
    from enginebench.models.decoder_folder import stored_weights

    assert stored_weights(tiny_llama)[0] == "float32"  # the default tiny Llama
    reason = TorchEngine.why_not(tiny_llama, "fp32", {"fp32_weights": "stored"})
    assert "float16 or bfloat16" in reason and "float32" in reason and "fp32_weights=full" in reason
    assert "for decoders" in TorchEngine.why_not(minilm, "fp32", {"fp32_weights": "stored"})
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        load_session("torch", tiny_llama, "fp32", threads=1, fp32_weights="stored")


def _available(monkeypatch, n_bytes: float) -> None:
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: int(n_bytes))


def test_the_reference_keeps_the_weights_as_stored_only_when_float32_does_not_fit(tiny_f16, monkeypatch):
    full_need = tiny_f16.params * 4 * 1.2
    assert TorchEngine.reference_options(tiny_f16) == ({}, None)  # this machine holds the tiny model in fp32
    _available(monkeypatch, full_need * 0.8)  # 16-bit weights plus one float32 Linear fit, float32 weights do not
    assert TorchEngine.why_not(tiny_f16, "fp32") is not None
    assert TorchEngine.reference_options(tiny_f16) == ({"fp32_weights": "stored"}, None)
    _available(monkeypatch, full_need * 0.3)  # nothing fits: both reasons are given
    options, reason = TorchEngine.reference_options(tiny_f16)
    assert "needs" in reason and "weights as stored" in reason


@pytest.mark.slow
def test_a_run_on_a_decoder_too_big_for_float32_is_judged_against_the_reference_on_stored_weights(tiny_f16,
                                                                                                monkeypatch):
    """The parent decides (the children, spawned, see the real memory): the torch fp32 cell is skipped for
    memory, and bf16 gets its fidelity against the reference computed on the weights as stored."""
    from enginebench import api

    _available(monkeypatch, tiny_f16.params * 4 * 1.2 * 0.8)
    run = api.run(tiny_f16.path, db=None, engines="torch", precision="fp32,bf16", prompt_len="16", gen_len="8",
                  threads="1", duration="0.1s", warmup="0.02s", repeat="1")
    by_precision = {}
    for r in run.results:
        by_precision.setdefault(r.precision, []).append(r)
    assert all(r.status == "skipped" and "needs" in r.error for r in by_precision["fp32"])
    bf16 = [r for r in by_precision["bf16"] if r.status == "ok"]
    assert bf16 and all(r.fidelity and r.fidelity["ok"] for r in bf16), [r.fidelity for r in bf16]
    assert all("as stored" in r.fidelity["reference_weights"] for r in bf16)
