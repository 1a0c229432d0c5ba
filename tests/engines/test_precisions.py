"""Reduced precisions on the torch and ONNX Runtime engines: fidelity vs torch fp32 and what really ran."""

import numpy as np
import pytest

from helpers.sessions import embed, load_session
from enginebench.engines import engine_class
from enginebench.measure.fidelity import REDUCED_PRECISION_THRESHOLD, compare_embeddings

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


def _fidelity(session, corpus, reference, precision):
    out = embed(session, corpus.fidelity_inputs())
    assert out.dtype == np.float32 and out.shape == reference.shape
    f = compare_embeddings(out, reference, precision)
    print(f"{precision}: min cosine {f['value']:.6f}, mean {f['mean_cosine']:.6f}")
    return f


def test_torch_bf16_runs_bf16_within_reduced_threshold(minilm, corpus, reference):
    import torch

    session = load_session("torch", minilm, "bf16")
    f = _fidelity(session, corpus, reference, "bf16")
    assert session.executed_precision == "bf16"
    assert next(session.module.parameters()).dtype == torch.bfloat16
    assert f["ok"] and f["value"] < 0.999999  # really reduced: bf16 cannot match fp32 to the last digit


def test_torch_int8_quantizes_linear_layers_within_reduced_threshold(minilm, corpus, reference):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    session = load_session("torch", minilm, "int8")
    f = _fidelity(session, corpus, reference, "int8")
    quantized = [m for m in session.module.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert session.executed_precision == "int8" and len(quantized) == session.details["int8_linear_layers"] > 0
    assert f["ok"] and f["threshold"] == REDUCED_PRECISION_THRESHOLD


def test_onnxruntime_int8_is_a_cached_quantized_graph_within_reduced_threshold(minilm, corpus, reference):
    session = load_session("onnxruntime", minilm, "int8")
    f = _fidelity(session, corpus, reference, "int8")
    assert f["ok"] and f["value"] < 0.99999
    assert session.executed_precision == "int8" and session.details["int8_matmuls"] > 0
    assert session.details["onnx_path"].endswith("model.int8.onnx")
    assert session.details["int8_settings"]["per_channel"] is True
    again = load_session("onnxruntime", minilm, "int8")
    assert again.details["int8_cached"] is True and again.details["onnx_path"] == session.details["onnx_path"]


def test_onnxruntime_int8_layers_all_quantizes_the_down_projections_too(minilm, corpus, reference):
    """`-o onnxruntime.int8_layers=all`: every weight MatMul int8, cached apart from the default graph, its share
    read back from the graph and its fidelity measured (whatever it is: `tune` judges it)."""
    default = load_session("onnxruntime", minilm, "int8")
    every = load_session("onnxruntime", minilm, "int8", int8_layers="all")
    assert every.details["onnx_path"] != default.details["onnx_path"]
    assert every.details["int8_settings"]["fp32_nodes"].startswith("none")
    kept, allq = default.details["quantization"], every.details["quantization"]
    assert allq["matmuls"]["quantized"] == allq["matmuls"]["total"] == kept["matmuls"]["quantized"] + 6
    assert allq["share_of_matmul_flops"] == 1.0 > kept["share_of_matmul_flops"] and not allq["layers_kept"]
    assert every.executed_precision == "int8"
    f = _fidelity(every, corpus, reference, "int8")
    assert 0.9 < f["value"] < 0.99999


def test_onnx_int8_keeps_down_projections_fp32(minilm):
    import onnx

    from enginebench.models.onnx_export import onnx_encoder
    from enginebench.models.onnx_quantize import kept_fp32

    path, _ = onnx_encoder(minilm)
    kept = kept_fp32(onnx.load(str(path)), "no-ffn-down")
    assert len(kept) == 6 and all(name.endswith("/output/dense/MatMul") for name in kept)  # one per layer


@pytest.mark.parametrize("engine", ["torch", "onnxruntime"])
def test_offered_precisions_have_no_unsupported_reason(engine, cpu_features):
    cls = engine_class(engine)
    for precision in cls.precisions:
        assert cls.why_not_precision(precision) is None, precision


def test_unsupported_precisions_say_why():
    ort = engine_class("onnxruntime")
    assert "fp16" not in ort.precisions and "Cast" in ort.why_not_precision("fp16")
    assert "int4" in engine_class("torch").why_not_precision("int4")
