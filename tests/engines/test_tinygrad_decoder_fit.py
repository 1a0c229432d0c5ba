"""Which tinygrad decoder precisions fit a 24 GiB machine: a 7B Llama's fp32 weights do not, and the refusal says
what does not fit, before anything is loaded (only its config.json is read)."""

from __future__ import annotations

import json

import pytest

from enginebench.engines import engine_class
from enginebench.models.llama_synthetic import LLAMA2_7B, full_config, parameter_count
from enginebench.models.spec import ModelSpec


@pytest.fixture
def llama_7b_shape(tmp_path):
    config = full_config(LLAMA2_7B)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return ModelSpec(name="llama2-7b-synthetic", kind="decoder", path=str(tmp_path), format="safetensors",
                     architecture="llama", params=parameter_count(config), size_bytes=0, content_hash="-",
                     hidden_size=4096, max_positions=4096)


def test_a_7b_llama_in_fp32_is_refused_on_a_24_gib_machine_and_int8_is_not(llama_7b_shape, monkeypatch):
    import enginebench.engines.tinygrad_llama as tinygrad_llama

    monkeypatch.setattr(tinygrad_llama, "available_memory_bytes", lambda: 22 << 30)  # a quiet 24 GiB machine
    tinygrad = engine_class("tinygrad")
    reason = tinygrad.why_not(llama_7b_shape, "fp32")
    assert reason.startswith("tinygrad fp32 needs ~") and "llama2-7b-synthetic" in reason
    assert "weights 25.1 GiB" in reason and "22.0 GiB available" in reason and "\n" not in reason
    assert reason.endswith("use int8 or a smaller model")
    assert tinygrad.why_not(llama_7b_shape, "int8") is None  # ~6.3 GiB of int8 weights
    parts = tinygrad_llama.memory_needed(llama_7b_shape, "int8")
    assert parts["weights"] == llama_7b_shape.params and parts["KV cache"] == 32 * 2 * 4096 * 1024 * 4
    monkeypatch.setattr(tinygrad_llama, "available_memory_bytes", lambda: 8 << 30)
    reason = tinygrad.why_not(llama_7b_shape, "int8")
    assert "int8 needs ~9.3 GiB" in reason and reason.endswith("use a smaller model or free memory")


def test_tune_offers_tinygrad_int8_for_decoders_only(minilm, llama_7b_shape, monkeypatch):
    """tune's space comes from the engine classes: int8 joined tinygrad's precisions for decoders and stays out
    of the encoder candidates."""
    import enginebench.engines.tinygrad_llama as tinygrad_llama
    from enginebench.search.space import candidates

    monkeypatch.setattr(tinygrad_llama, "available_memory_bytes", lambda: 22 << 30)
    encoder = {c.precision for c in candidates(["tinygrad"], minilm, "latency", [1], cores=2)}
    decoder = {c.precision for c in candidates(["tinygrad"], llama_7b_shape, "latency", [1], cores=2)}
    assert encoder == {"fp32", "fp16"} and decoder == {"fp16", "int8"}  # 7B fp32 does not fit in 22 GiB
