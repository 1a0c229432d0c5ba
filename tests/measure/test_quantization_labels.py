"""int8 results say what was quantized (read from what the engine runs), and the precision label says what ran."""

import pytest
from helpers.sessions import embed, load_session

from enginebench.formats.tables.encoder import table_rows
from enginebench.measure.quantization import (
    WeightMatmul,
    matmul_summary,
    name_patterns,
    onnx_outline,
    onnx_weight_matmuls,
    short_label,
)
from enginebench.store.labels import precision_label
from enginebench.store.model import Result, Run

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

KEYS = {"scheme", "weights", "activations", "share_of_matmul_flops", "layers_kept", "matmuls"}


# --- the generic helpers ---------------------------------------------------------------------------------------

def test_share_counts_flops_not_layers_and_leaves_out_the_pooler():
    layers = [WeightMatmul(f"layer.{i}.{name}", n_in, n_out, q) for i in range(2)
              for name, n_in, n_out, q in (("qkv", 4, 12, True), ("up", 4, 16, True), ("down", 16, 4, False))]
    summary = matmul_summary(layers + [WeightMatmul("pooler.dense", 4, 4, False)])
    assert summary["share_of_matmul_flops"] == pytest.approx((48 + 64) / (48 + 64 + 64), abs=1e-4)
    assert summary["matmuls"] == {"quantized": 4, "total": 6}
    assert summary["layers_kept"] == ["layer.*.down"] and list(summary["excluded"]) == ["pooler.dense"]


def test_name_patterns_star_only_the_numbers_that_vary():
    names = ["enc/layer_0/ffn/linear_1", "enc/layer_1/ffn/linear_1", "head", "a.0.x"]
    assert name_patterns(names) == ["enc/layer_*/ffn/linear_1", "head", "a.0.x"]


def test_short_label():
    assert short_label({"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 0.6667}) == \
        "w8a8, 67% of MatMul FLOPs"
    assert short_label({"weights": "int8", "activations": "fp32", "share_of_matmul_flops": 1.0}) == \
        "w8a32, 100% of MatMul FLOPs"
    assert short_label({"weights": "int8", "activations": "int8", "share_of_matmul_flops": 0.998}) == \
        "w8a8, 99.8% of MatMul FLOPs"  # a partial share is never rounded up to all
    nothing = {"weights": "fp32", "activations": "fp32", "share_of_matmul_flops": 0.0}
    assert short_label(nothing) == "no MatMul quantized"


# --- per engine, on MiniLM: each session loaded once ------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_int8(minilm):
    return load_session("torch", minilm, "int8")


@pytest.fixture(scope="module")
def ort_int8(minilm):
    return load_session("onnxruntime", minilm, "int8")


def test_torch_int8_quantizes_a_third_of_the_matmul_flops_and_lists_the_ffn_as_kept(torch_int8):
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    q = torch_int8.details["quantization"]
    assert KEYS <= set(q) and q["weights"] == "int8" and q["activations"] == "uint8"
    assert "per-channel" in q["scheme"] and "dynamic" in q["scheme"]
    # a direct count on the module tree: quantized Linear vs nn.Linear, each in x out, the pooler left out
    flops = {True: 0, False: 0}
    for name, layer in torch_int8.module.named_modules():
        if "pooler" not in name and isinstance(layer, (DynamicQuantizedLinear, torch.nn.Linear)):
            flops[isinstance(layer, DynamicQuantizedLinear)] += layer.in_features * layer.out_features
    assert q["share_of_matmul_flops"] == pytest.approx(flops[True] / (flops[True] + flops[False]), abs=1e-4)
    assert 0 < q["share_of_matmul_flops"] < 1 and q["share_of_matmul_flops"] == pytest.approx(1 / 3, abs=1e-3)
    assert q["matmuls"] == {"quantized": 24, "total": 36}
    assert sorted(q["layers_kept"]) == ["transformer.encoder.layer.*.intermediate.dense",
                                        "transformer.encoder.layer.*.output.dense"]
    assert torch_int8.executed_precision == "int8"


def test_onnxruntime_int8_share_matches_a_direct_count_and_keeps_the_down_projections(ort_int8, minilm):
    import onnx

    from enginebench.models.onnx_export import onnx_encoder
    from enginebench.models.onnx_quantize import kept_fp32

    q = ort_int8.details["quantization"]
    assert KEYS <= set(q) and q["weights"] == "int8" and q["activations"] == "uint8"
    assert q["scheme"].startswith("dynamic w8a8 (per-channel int8 weights")
    # a direct count on the quantized file, weights loaded: integer MatMuls vs float MatMuls with a weight
    graph = onnx.load(ort_int8.details["onnx_path"]).graph
    dims = {init.name: tuple(init.dims) for init in graph.initializer}
    integer = [dims[n.input[1]] for n in graph.node if n.op_type == "MatMulInteger"]
    floating = [dims[n.input[1]] for n in graph.node if n.op_type == "MatMul" and n.input[1] in dims]
    assert len(integer) == q["matmuls"]["quantized"] == 30 and len(integer) + len(floating) == q["matmuls"]["total"]
    quantized_flops, float_flops = (sum(a * b for a, b in shapes) for shapes in (integer, floating))
    assert q["share_of_matmul_flops"] == pytest.approx(quantized_flops / (quantized_flops + float_flops), abs=1e-4)
    assert q["share_of_matmul_flops"] == pytest.approx(2 / 3, abs=1e-3)
    # what stayed float is exactly the FFN down-projections the quantizer was told to keep
    assert q["layers_kept"] == ["/transformer/encoder/layer.*/output/dense/MatMul"]
    kept = {n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in dims}
    assert kept == set(kept_fp32(onnx.load(str(onnx_encoder(minilm)[0])), "no-ffn-down")) and len(kept) == 6
    assert ort_int8.executed_precision == "int8"


def test_onnx_outline_walks_like_the_full_graph(ort_int8):
    import onnx

    full = onnx.load(ort_int8.details["onnx_path"])
    assert onnx_weight_matmuls(onnx_outline(ort_int8.details["onnx_path"])) == onnx_weight_matmuls(full)


def test_openvino_int8_label_says_whether_the_activations_were_quantized(minilm, corpus):
    """OpenVINO's int8 compresses the weights; whether the plugin also quantizes the activations (dynamic
    quantization, on by default where the CPU has VNNI) is seen here from the embeddings themselves: the session
    with it off is the weights-only reference, and the label must agree with what the outputs show."""
    import numpy as np

    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from enginebench.engines import engine_class

    if engine_class("openvino").why_not_precision("int8"):  # e.g. under an AVX2 oneDNN cap on an AVX-512 CPU
        pytest.skip(engine_class("openvino").why_not_precision("int8"))
    batch = corpus.batch(0, 8)
    weights_only = load_session("openvino", minilm, "int8", dynamic_quantization="off")
    q = weights_only.details["quantization"]
    assert KEYS <= set(q) and q["weights"] == "int8" and q["activations"] == "fp32"
    assert q["scheme"].startswith("weights-only int8") and "zero points" in q["scheme"]
    assert q["share_of_matmul_flops"] == 1.0 and q["layers_kept"] == []
    assert q["matmuls"] == {"quantized": 36, "total": 36}  # the same 36 weight MatMuls as the ONNX graph
    assert weights_only.executed_precision == "int8-weights/fp32"
    assert weights_only.details["dynamic_quantization"]["group_size"] == 0

    default = load_session("openvino", minilm, "int8")
    plain, ours = (embed(s, batch) for s in (weights_only, default))
    quantized = float(np.max(np.abs(ours - plain))) > 1e-4 * float(np.max(np.abs(plain)))
    q = default.details["quantization"]
    assert default.details["dynamic_quantization"]["applied"] is quantized, default.details["dynamic_quantization"]
    if quantized:
        assert q["activations"] == "int8" and q["scheme"].startswith("dynamic w8a8")
        assert f"one scale per {default.details['dynamic_quantization']['group_size']} inputs" in q["scheme"]
        assert default.executed_precision == "int8" and short_label(q) == "w8a8, 100% of MatMul FLOPs"
    else:
        assert q["activations"] == "fp32" and default.executed_precision == "int8-weights/fp32"
    assert q["share_of_matmul_flops"] == 1.0


def test_openvino_int8_is_refused_where_a_kernel_cap_breaks_it(monkeypatch):
    from enginebench.engines.openvino import OpenVinoEngine
    from enginebench.measure import cpu_features

    monkeypatch.delenv(cpu_features.ENV, raising=False)
    monkeypatch.setattr(cpu_features, "_real_flags", lambda: frozenset({"avx2", "avx512f", "avx512bw", "avx512dq",
                                                                         "avx512vl", "avx512_vnni"}))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    reason = OpenVinoEngine.why_not_precision("int8")
    assert reason and "ONEDNN_MAX_CPU_ISA=AVX2" in reason and "ENGINEBENCH_CPU_FEATURES" in reason
    assert OpenVinoEngine.why_not_precision("fp32") is None and OpenVinoEngine.why_not_precision("int8-static") is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2_VNNI")
    assert OpenVinoEngine.why_not_precision("int8") is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv(cpu_features.ENV, "avx2")  # the cap the measuring process will be given
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in (OpenVinoEngine.why_not_precision("int8") or "")
    monkeypatch.setattr(cpu_features, "_real_flags", lambda: frozenset({"avx", "avx2", "fma"}))  # a real AVX2 CPU
    assert OpenVinoEngine.why_not_precision("int8") is None


def test_ctranslate2_int8_reads_the_weight_dtypes_from_model_bin(minilm):
    pytest.importorskip("ctranslate2")
    from pathlib import Path

    from enginebench.measure.quantization import ct2_variables

    session = load_session("ctranslate2", minilm, "int8")
    q = session.details["quantization"]
    assert KEYS <= set(q) and "model.bin" in q["source"] and "derived" not in q["source"]
    assert q["share_of_matmul_flops"] == 1.0 and q["layers_kept"] == []
    linear = [v for v in ct2_variables(Path(session.details["ct2_path"]) / "model.bin")
              if v[0].endswith("/weight") and len(v[1]) == 2 and "embeddings" not in v[0] and "pooler" not in v[0]]
    assert q["matmuls"] == {"quantized": len(linear), "total": len(linear)} and {v[2] for v in linear} == {"int8"}
    assert session.executed_precision == "int8"


# --- executed precision: read back, never echoed -------------------------------------------------------------------

def test_ctranslate2_that_silently_computes_fp32_reports_fp32(minilm, monkeypatch):
    """Asked for int8, loaded with a float32 compute type: CTranslate2 dequantizes the int8 weights."""
    pytest.importorskip("ctranslate2")
    import enginebench.engines.ctranslate2 as ct2

    monkeypatch.setitem(ct2._PRECISIONS, "int8", ("int8", "float32"))
    session = load_session("ctranslate2", minilm, "int8")
    assert session.details["compute_type"] == "float32" and session.executed_precision == "fp32"
    assert session.details["quantization"]["share_of_matmul_flops"] == 0.0


def test_onnxruntime_int8_given_a_float_graph_reports_fp32(minilm, monkeypatch):
    import enginebench.models.onnx_quantize as onnx_quantize

    monkeypatch.setattr(onnx_quantize, "quantized_onnx", lambda path, key, layers: (path, {"onnx_path": str(path)}))
    session = load_session("onnxruntime", minilm, "int8")
    assert session.executed_precision == "fp32"
    q = session.details["quantization"]
    assert q["share_of_matmul_flops"] == 0.0 and q["matmuls"] == {"quantized": 0, "total": 36}


def test_torch_int8_matching_no_layer_reports_fp32(minilm, monkeypatch):
    import enginebench.engines.torch_eager as torch_eager

    monkeypatch.setattr(torch_eager, "INT8_LINEARS_MATCHING", ".no-such-layer.")
    session = load_session("torch", minilm, "int8")
    assert session.executed_precision == "fp32" and session.details["quantization"]["share_of_matmul_flops"] == 0


def test_torch_decoder_int8_reads_back_its_layers(tiny_llama, monkeypatch):
    import torch.ao.quantization as tq

    session = load_session("torch", tiny_llama, "int8")
    q = session.details["quantization"]
    assert session.executed_precision == "int8" and q["share_of_matmul_flops"] == 1.0 and q["layers_kept"] == []
    assert "per-tensor" in q["scheme"]  # the decoder's quantize_dynamic uses the default (per-tensor) qconfig
    monkeypatch.setattr(tq, "quantize_dynamic", lambda model, *args, **kwargs: model)  # quantization that did nothing
    silent = load_session("torch", tiny_llama, "int8")
    assert silent.executed_precision == "fp32" and silent.details["quantization"]["share_of_matmul_flops"] == 0


# --- the table -----------------------------------------------------------------------------------------------------

def _result(precision, executed, details=None, engine="onnxruntime", **kw):
    ok = dict(samples=[1_000_000], latency_ms={"median": 1.0, "ci95": [0.9, 1.1], "p99": 1.2},
              throughput={"items_per_s": 1000.0, "ci95": [900.0, 1100.0], "tokens_per_s": 1.0},
              verdict={"ok": True, "reasons": []})
    fields = dict(engine=engine, model="minilm", precision=precision, scenario="latency", workload="corpus",
                  batch_size=1, seq_len=128, workers=1, threads=2, executed_precision=executed, details=details or {})
    return Result(**{**fields, **ok, **kw})


def test_precision_column_says_what_ran(torch_int8, ort_int8):
    ort = _result("int8", ort_int8.executed_precision, ort_int8.details)
    torch = _result("int8", torch_int8.executed_precision, torch_int8.details, engine="torch")
    openvino = _result("int8", "int8-weights/fp32", {"quantization": {
        "weights": "int8", "activations": "fp32", "share_of_matmul_flops": 1.0}}, engine="openvino")
    silent = _result("int8", "fp32", {"quantization": {"weights": "fp32", "activations": "fp32",
                                                       "share_of_matmul_flops": 0.0}})
    assert precision_label(ort) == "int8 (w8a8, 67% of MatMul FLOPs)"
    assert precision_label(torch) == "int8 (w8a8, 33% of MatMul FLOPs)"
    assert precision_label(openvino) == "int8 (w8a32, 100% of MatMul FLOPs)"
    assert precision_label(silent) == "int8→fp32"
    assert precision_label(_result("fp32", "fp32")) == "fp32"
    assert precision_label(_result("bf16", "fp32")) == "bf16→fp32"
    headers, rows, _ = table_rows([ort, torch, openvino])
    column = [row[headers.index("precision")] for row in rows]
    assert column == ["int8 (w8a8, 67% of MatMul FLOPs)", "int8 (w8a8, 33% of MatMul FLOPs)",
                      "int8 (w8a32, 100% of MatMul FLOPs)"]


def test_decoder_table_uses_the_same_label():
    from enginebench.formats.tables.decoder import HEADERS, decoder_rows

    r = _result("int8", "int8", {"quantization": {"weights": "int8", "activations": "uint8",
                                                  "share_of_matmul_flops": 1.0}},
                engine="torch", scenario="generate", workload="tg16",
                decode_tokens_per_s={"median": 10.0, "mean": 10.0, "ci95": [9.0, 11.0]})
    row = decoder_rows(Run("r", "now", {}, {}, [r]))[0]
    assert row[HEADERS.index("precision")] == "int8 (w8a8, 100% of MatMul FLOPs)"
