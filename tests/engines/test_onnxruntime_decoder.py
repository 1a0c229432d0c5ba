"""ONNX Runtime decoder against transformers fp32: the exported graph's forward, prefill and cached decode on the
tiny synthetic Llama, a broken cache caught by the fidelity check, int8's weights and label, the export cache,
and SmolLM2's real weights within the project's decoder fidelity bounds."""

from __future__ import annotations

import os

import numpy as np
import pytest

from enginebench.engines import engine_class
from enginebench.models.spec import ModelSpec

pytest.importorskip("onnxruntime")
pytest.importorskip("transformers")

from helpers.sessions import load_session  # noqa: E402
from helpers.tiny_llama import TransformersReference, argmax_agreement, forward_error, prompt_ids  # noqa: E402

from enginebench.engines.base import DecoderSession  # noqa: E402
from enginebench.engines.onnxruntime_decoder import OnnxRuntimeDecoderSession  # noqa: E402
from enginebench.measure.llm_fidelity import compare_decoder, reference_data, thresholds_for  # noqa: E402
from enginebench.measure.quantization import short_label  # noqa: E402
from enginebench.workloads.prompts import corpus_token_rows  # noqa: E402

FP32_MAX_ABS = 1e-4  # summation order only; logits are O(1..10)
NEW_TOKENS = 12


# -- what the engine offers, without loading anything ----------------------------------------------------------

def _decoder_spec(params: int) -> ModelSpec:
    return ModelSpec(name="a-llama", kind="decoder", path="/nonexistent", format="safetensors", architecture="llama",
                     params=params, size_bytes=2 * params, content_hash="x", hidden_size=4096, max_positions=4096)


def test_decoders_are_offered_in_fp32_and_int8_only():
    cls = engine_class("onnxruntime")
    assert "decoder" in cls.model_kinds
    small = _decoder_spec(1_000_000)
    assert cls.why_not(small, "fp32") is None and cls.why_not(small, "int8") is None
    for precision in ("int8-static", "bf16"):
        assert "fp32, int8" in cls.why_not(small, precision)


def test_the_7b_shape_is_refused_in_fp32_and_offered_in_int8_on_a_machine_of_this_kind(monkeypatch):
    """The Llama-2-7B shape with 23 GiB available: its float32 weights alone are 27 GB, its int8 graph (built
    quantized, never through a float32 copy) needs ~15 GiB. With 12 GiB available both are refused."""
    from enginebench.measure import memory

    huge = _decoder_spec(6_738_415_616)
    engine = engine_class("onnxruntime")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 23 * 2**30)
    reason = engine.why_not(huge, "fp32")
    assert reason and "GiB" in reason and "available" in reason and "a-llama" in reason and "in int8" in reason
    assert engine.why_not(huge, "int8") is None
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 12 * 2**30)
    assert "available" in engine.why_not(huge, "int8")


def test_a_llama_the_graph_builder_cannot_write_is_refused_before_loading(tmp_path):
    """Projection biases (attention_bias, as Qwen-style checkpoints set) or another MLP activation would be
    silently dropped by a builder that writes Llama's graph: refused with the field that differs."""
    import dataclasses
    import json

    engine = engine_class("onnxruntime")
    spec = dataclasses.replace(_decoder_spec(1_000_000), path=str(tmp_path))
    for field, value in (("attention_bias", True), ("mlp_bias", True), ("hidden_act", "gelu")):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", field: value}))
        reason = engine.why_not(spec, "int8")
        assert reason and field in reason and "cannot build" in reason
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_act": "silu"}))
    assert engine.why_not(spec, "int8") is None


# -- the tiny synthetic Llama ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory):
    """A cache of this module's own, so the first load of the tiny Llama here really exports. Set only around
    those loads: the module's runs keep the suite's cache, where the machine's ceilings are measured once."""
    return str(tmp_path_factory.mktemp("ort-decoder-cache"))


def _load_in(cache: str, *args):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ENGINEBENCH_CACHE", cache)
        return load_session(*args)


@pytest.fixture(scope="module")
def fp32(fresh_cache, tiny_llama):
    return _load_in(fresh_cache, "onnxruntime", tiny_llama, "fp32")


@pytest.fixture(scope="module")
def int8(fresh_cache, fp32, tiny_llama):
    return _load_in(fresh_cache, "onnxruntime", tiny_llama, "int8")


@pytest.fixture(scope="module")
def reference(tiny_llama):
    """The torch fp32 reference's fidelity data, as the generate scenario computes it once per run."""
    torch_fp32 = load_session("torch", tiny_llama, "fp32", threads=1)
    ids = corpus_token_rows(tiny_llama.path, rows=2, length=48, seed=11)
    return reference_data(torch_fp32, ids, ids[:, :16], new_tokens=NEW_TOKENS)


@pytest.mark.engine
def test_decoder_models_load_a_decoder_session_read_back(fp32):
    assert isinstance(fp32, DecoderSession)
    assert fp32.executed_precision == "fp32" and fp32.details["int8_matmuls"] == 0
    assert fp32.details["threads_used"] == fp32.session.get_session_options().intra_op_num_threads == 2
    names = [i.name for i in fp32.session.get_inputs()]
    assert names[0] == "input_ids" and names[-1] == "logits_positions"
    assert [o.name for o in fp32.session.get_outputs()][1:] == [n.replace("past_key_values", "present")
                                                                for n in names[1:-1]]


@pytest.mark.engine
def test_a_bfloat16_checkpoint_with_rope_scaling_builds_the_float32_models_graph(tmp_path, tiny_llama):
    """bfloat16 weights (read as float32's upper half) and llama3 rope scaling (angles from transformers' own
    rotary module) reach the built graph: its logits are transformers' float32 forward of the same folder, and
    differ from it without the scaling (so the scaling was not lost on the way)."""
    import json
    import shutil
    from pathlib import Path
    from types import SimpleNamespace

    import onnxruntime as ort
    import torch
    from safetensors.torch import load_file, save_file

    from enginebench.models.onnx_decoder_build import ONNX_FILE, build, cache_names

    folder = tmp_path / "bf16-llama"
    folder.mkdir()
    weights = {}
    for file in sorted(Path(tiny_llama.path).iterdir()):
        if file.suffix == ".safetensors":
            weights.update(load_file(file))
        elif "index" not in file.name:
            shutil.copy(file, folder)
    save_file({name: t.to(torch.bfloat16) for name, t in weights.items()}, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    plain = dict(config)
    config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 32}
    (folder / "config.json").write_text(json.dumps(config))
    out = tmp_path / "graph"
    out.mkdir()
    build(str(folder), out, "fp32")

    session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
    ids = prompt_ids(tiny_llama, batch=2, length=48, seed=4)
    past, _ = cache_names(config["num_hidden_layers"])
    empty = np.zeros((2, config["num_key_value_heads"], 0, config["hidden_size"] // config["num_attention_heads"]),
                     dtype=np.float32)
    logits = session.run(["logits"], {"input_ids": ids, "logits_positions": np.arange(48), **dict.fromkeys(past, empty)})[0]
    scaled = TransformersReference(SimpleNamespace(path=str(folder))).logits(ids)
    assert np.abs(logits - scaled).max() < FP32_MAX_ABS
    (folder / "config.json").write_text(json.dumps(plain))
    assert np.abs(logits - TransformersReference(SimpleNamespace(path=str(folder))).logits(ids)).max() > 100 * FP32_MAX_ABS


@pytest.mark.engine
def test_the_export_is_reused_not_redone(fp32, fresh_cache, tiny_llama):
    assert fp32.details["onnx_cached"] is False
    path = fp32.details["onnx_path"]
    before = os.stat(path).st_mtime_ns
    again = _load_in(fresh_cache, "onnxruntime", tiny_llama, "fp32")
    assert again.details["onnx_cached"] is True and again.details["onnx_path"] == path
    assert os.stat(path).st_mtime_ns == before


@pytest.mark.engine
def test_fp32_forward_logits_match_transformers(fp32, llama_reference, tiny_llama):
    assert forward_error(fp32, llama_reference, prompt_ids(tiny_llama)) < FP32_MAX_ABS


@pytest.mark.engine
def test_fp32_prefill_then_cached_decode_equals_full_forward(fp32, llama_reference, tiny_llama):
    ids = prompt_ids(tiny_llama, length=40)
    ref = llama_reference.logits(ids)
    fp32.reset()
    first = fp32.prefill(ids[:, :24])
    steps = np.stack([fp32.decode(ids[:, i:i + 1]) for i in range(24, 40)], axis=1)
    assert np.abs(first - ref[:, 23]).max() < FP32_MAX_ABS
    assert np.abs(steps - ref[:, 24:40]).max() < FP32_MAX_ABS
    assert fp32.position == 40 and fp32.past["past_key_values.0.key"].shape()[2] == 40


@pytest.mark.engine
def test_prefill_starts_a_fresh_sequence_and_decode_needs_one(fp32, tiny_llama):
    ids = prompt_ids(tiny_llama, length=12)
    a = fp32.prefill(ids)
    fp32.decode(ids[:, :1])
    np.testing.assert_array_equal(fp32.prefill(ids), a)
    with pytest.raises(ValueError, match="sequences"):
        fp32.decode(ids[:1, :1])
    fp32.reset()
    with pytest.raises(RuntimeError, match="prefill"):
        fp32.decode(ids[:, :1])
    with pytest.raises(ValueError, match="token ids"):
        fp32.forward_logits(np.array([[0, 10_000]]))


@pytest.mark.engine
def test_stream_generates_transformers_greedy_tokens(fp32, llama_reference, tiny_llama):
    prompt = prompt_ids(tiny_llama, length=12, seed=1)
    tokens = np.stack(list(fp32.stream(prompt, 8)), axis=1)
    np.testing.assert_array_equal(tokens, llama_reference.greedy(prompt, 8))


class BrokenPast(OnnxRuntimeDecoderSession):
    """The same ONNX session, its decode steps fed a deliberately broken past."""

    def __init__(self, inner: OnnxRuntimeDecoderSession, fault: str):
        super().__init__(inner.session, inner.signature, "fp32", {})
        self.fault = fault

    def decode(self, tokens):
        if self.fault == "zeroed":  # the right length (so positions are right), every cached key and value 0
            self.past = {k: self.OrtValue.ortvalue_from_numpy(np.zeros(v.shape(), np.float32))
                         for k, v in self.past.items()}
            return super().decode(tokens)
        assert self.fault == "stale"  # the presents are dropped: every step sees the prompt's cache only
        past, position = self.past, self.position
        logits = super().decode(tokens)
        self.past, self.position = past, position
        return logits


@pytest.mark.engine
def test_intact_cache_passes_the_fidelity_check(fp32, reference):
    result = compare_decoder(fp32, reference, "fp32")
    assert result["ok"], result["failures"]
    assert result["cache_agreement"] >= thresholds_for("fp32")["top1"] and result["cache_positions"] == 2 * NEW_TOKENS


@pytest.mark.engine
@pytest.mark.parametrize("fault", ["zeroed", "stale"])
def test_a_broken_cache_fails_cache_agreement(fp32, reference, fault):
    result = compare_decoder(BrokenPast(fp32, fault), reference, "fp32")
    assert result["value"] == 1.0  # teacher forcing runs without the cache: it cannot see the fault
    assert not result["ok"] and result["cache_agreement"] < thresholds_for("fp32")["top1"]
    assert any("cache agreement" in f for f in result["failures"])


@pytest.mark.engine
def test_int8_weights_are_eight_bit_blocks_of_the_fp32_export(fp32, int8):
    """The quantized file against the same quantization done in numpy on the fp32 export's weights: per block of
    32 inputs one scale maps the largest |weight| to -128, codes are the rounded quotients clipped to
    [-128, 127]. Codes may differ only where the quotient lies within rounding of a .5 tie."""
    import onnx
    from onnx import numpy_helper

    original = {i.name: i for i in onnx.load(fp32.details["onnx_path"]).graph.initializer}
    quantized_model = onnx.load(int8.details["onnx_path"])
    quantized = {i.name: i for i in quantized_model.graph.initializer}
    nodes = [n for n in quantized_model.graph.node if n.op_type == "MatMulNBits"]
    assert nodes and not [n for n in quantized_model.graph.node if n.op_type == "MatMul" and n.input[1] in quantized]
    for node in nodes:
        attrs = {a.name: a.i for a in node.attribute}
        assert attrs["bits"] == 8 and attrs["block_size"] == 32 and attrs["accuracy_level"] == 4
        codes = numpy_helper.to_array(quantized[node.input[1]]).astype(np.int32) - 128  # [N, blocks, 32]
        scales = numpy_helper.to_array(quantized[node.input[2]])[..., None]  # [N, blocks, 1]
        weight = numpy_helper.to_array(original[node.input[1].removesuffix("_Q8")])  # [K, N]
        blocks = weight.T.reshape(codes.shape).astype(np.float64)
        largest = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)
        np.testing.assert_allclose(scales, largest / -128, rtol=1e-6)
        quotient = blocks / (largest / -128)
        expected = np.clip(np.round(quotient), -128, 127)
        differ = codes != expected
        assert np.all(np.abs(codes - expected)[differ] == 1)
        assert np.all(np.abs(np.abs(quotient - np.floor(quotient)) - 0.5)[differ] < 1e-3)


@pytest.mark.engine
def test_int8_is_labelled_from_its_graph(int8, fp32):
    assert int8.executed_precision == "int8"
    # what a decode step reads (the roofline's bytes): per block of 32 weights, 32 bytes and a float32 scale
    assert int8.details["weight_bytes"] * 128 == fp32.details["weight_bytes"] * 36
    q = int8.details["quantization"]
    assert q["ops"] == {"MatMulNBits": q["matmuls"]["total"]} and q["layers_kept"] == []
    assert q["share_of_matmul_flops"] == 1.0 and q["weights"] == "int8" and q["activations"] == "int8"
    assert short_label(q) == "w8a8, 100% of MatMul FLOPs"
    assert int8.details["int8_settings"]["accuracy_level"] == 4


@pytest.mark.engine
def test_int8_passes_the_reduced_precision_fidelity_bounds(int8, fp32, reference, tiny_llama, llama_reference):
    """The bounds every reduced-precision decoder is judged by (measure/llm_fidelity.py), not ones fitted to
    this CPU's int8 kernels."""
    ids = prompt_ids(tiny_llama, batch=4, length=32, seed=2)
    out = int8.forward_logits(ids)
    assert np.abs(out - fp32.forward_logits(ids)).max() > 0  # the quantized graph really ran
    assert argmax_agreement(out, llama_reference.logits(ids)) >= thresholds_for("int8")["top1"]
    result = compare_decoder(int8, reference, "int8")
    assert result["ok"], result["failures"]


# -- SmolLM2-135M, real weights ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2(require):
    from enginebench.errors import UsageError
    from enginebench.models import resolve_model

    try:
        return resolve_model("smollm2-135m")
    except UsageError as e:
        require(str(e))


@pytest.fixture(scope="module")
def smollm2_reference(smollm2):
    torch_fp32 = load_session("torch", smollm2, "fp32")
    ids = corpus_token_rows(smollm2.path, rows=2, length=64, seed=11)
    data = reference_data(torch_fp32, ids, ids[:, :16], new_tokens=16)
    torch_fp32.close()
    return data


@pytest.mark.engine
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_smollm2_matches_torch_fp32_within_the_decoder_bounds(smollm2, smollm2_reference, precision):
    session = load_session("onnxruntime", smollm2, precision)
    result = compare_decoder(session, smollm2_reference, precision)
    assert session.executed_precision == precision
    assert result["ok"], result["failures"]
    session.close()



# -- end to end: the generate and decoder server scenarios, in child processes ---------------------------------

@pytest.mark.engine
@pytest.mark.slow
def test_generate_runs_both_precisions_with_figures_and_fidelity(tiny_llama):
    from enginebench import api
    from enginebench.store.labels import precision_label

    run = api.run(tiny_llama.path, db=None, engines="onnxruntime", precision="fp32,int8", prompt_len="16",
                  gen_len="8", threads="1", duration="0.2s", warmup="0.05s", repeat="1")
    by_cell = {(r.precision, r.workload): r for r in run.results if r.engine == "onnxruntime"}
    assert set(by_cell) == {(p, t) for p in ("fp32", "int8") for t in ("pp16", "tg8")}
    for (precision, test), r in by_cell.items():
        assert r.status == "ok", r.error
        assert r.executed_precision == precision and r.details["threads_used"] == 1
        assert r.fidelity["ok"], r.fidelity["failures"]
        if test == "pp16":
            assert r.prefill_tokens_per_s["median"] > 0 and r.details["pp_timed_as"] == "prefill"
        else:
            assert r.decode_tokens_per_s["median"] > 0 and r.ttft_ms["median"] > 0 and r.itl_ms["n"] > 0
    assert precision_label(by_cell["int8", "tg8"]) == "int8 (w8a8, 100% of MatMul FLOPs)"


@pytest.mark.engine
@pytest.mark.slow
def test_the_decoder_server_batches_statically(tiny_llama):
    """No per-sequence cache slots: requests that start together are prefilled and decoded together."""
    pytest.importorskip("mlperf_loadgen")
    from enginebench import api

    run = api.run(tiny_llama.path, db=None, engines="onnxruntime", precision="fp32", scenario="server",
                  qps="20", slo_ttft="500", slo_tpot="100", prompt_len="16", gen_len="4", max_batch="2",
                  threads_per_worker="1", duration="0.5s", warmup="0.1s", repeat="1")
    r = next(r for r in run.results if r.engine == "onnxruntime")
    assert r.status == "ok", r.error
    assert r.serving["kind"] == "decoder" and r.serving["batching"]["mode"] == "static"
    assert r.fidelity and r.fidelity["ok"]
