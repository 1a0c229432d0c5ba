"""int8-static: calibration inputs kept apart from the measured ones, fidelity on MiniLM, what the label says,
and the calibrated artifacts cached.

The fidelity bound is the project's reduced-precision threshold (0.99) on every CPU: both engines' settings
were chosen to clear it without VNNI as well (ONNX Runtime: 7-bit weights, so MLAS's int16 byte-pair sums
cannot saturate; OpenVINO: measured with oneDNN capped at AVX2, see engines/openvino.py).
"""

import numpy as np
import pytest
from helpers.sessions import embed, load_session

from enginebench.engines import require_engine
from enginebench.errors import UsageError
from enginebench.measure.fidelity import compare_embeddings, threshold_for
from enginebench.measure.quantization import onnx_outline
from enginebench.workloads import build_workload
from enginebench.workloads.calibration import calibration_set

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


def load_static(engine, model, measured, threads=2, **options):
    cls = require_engine(engine)
    return cls().load(model, "int8-static", cls.make_options(threads, {k: str(v) for k, v in options.items()}),
                      measured=measured)


def rows(batch) -> set[bytes]:
    return {row.tobytes() for row in batch.input_ids}


# --- calibration inputs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 7])
def test_calibration_equals_no_measured_input_and_is_seeded(minilm, titles, seed):
    corpus = build_workload("corpus", minilm.path, seq_len=128, seed=seed)
    calibration = calibration_set(minilm.path, [corpus, titles])
    assert calibration.size > 0 and not rows(calibration.batch) & rows(corpus.pool)
    assert not rows(calibration.batch) & rows(corpus.fidelity_inputs())
    assert len(rows(calibration.batch)) == calibration.size  # no input twice
    again = calibration_set(minilm.path, [corpus, titles])
    assert again.identity() == calibration.identity()  # the same run calibrates on the same inputs
    record = calibration.record()
    assert record["items"] == calibration.size and record["seed"] == seed and record["source"] == "python-docs"
    assert "assumed" not in record["kept_apart_from"]
    # the default corpus: every document is tokenized, and all but the calibration ones were set aside
    assert record["documents_examined"] - record["documents_excluded"] == calibration.size


def test_another_seed_measures_other_inputs_and_calibrates_on_others(minilm):
    first = calibration_set(minilm.path, [build_workload("corpus", minilm.path, seed=0)])
    second = calibration_set(minilm.path, [build_workload("corpus", minilm.path, seed=1)])
    assert first.identity() != second.identity()


def test_calibration_without_the_runs_workloads_says_what_it_assumed(minilm, corpus):
    calibration = calibration_set(minilm.path, None)
    assert "assumed" in calibration.record()["kept_apart_from"]
    assert not rows(calibration.batch) & rows(corpus.pool)  # the default workload is what it set apart


def test_a_corpus_fully_measured_leaves_nothing_to_calibrate_on(minilm, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("\n".join(f"document number {i} about sorting lists and reading files" for i in range(5)))
    measured = build_workload("corpus", minilm.path, corpus=str(small))  # 256 draws of 5 documents: all drawn
    with pytest.raises(UsageError, match="no document left for calibration"):
        calibration_set(minilm.path, [measured])


# --- the engines on MiniLM --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ort_static(minilm, corpus):
    return load_static("onnxruntime", minilm, [corpus])


@pytest.fixture(scope="module")
def ov_static(minilm, corpus):
    return load_static("openvino", minilm, [corpus])


def test_int8_static_is_a_known_precision_of_both_engines():
    from enginebench.config import known_precisions

    assert "int8-static" in known_precisions()
    for engine in ("onnxruntime", "openvino"):
        assert "int8-static" in require_engine(engine).describe().precisions
    assert threshold_for("int8-static") == 0.99


@pytest.fixture(scope="module")
def titles_reference(minilm, titles):
    return embed(load_session("torch", minilm), titles.fidelity_inputs())


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_int8_static_keeps_fidelity_on_both_workloads(engine, ort_static, ov_static, corpus, titles, reference,
                                                      titles_reference):
    session = {"onnxruntime": ort_static, "openvino": ov_static}[engine]
    for workload, expected in ((corpus, reference), (titles, titles_reference)):
        fidelity = compare_embeddings(embed(session, workload.fidelity_inputs()), expected, "int8-static")
        assert fidelity["ok"], (workload.spec.name, fidelity)


def test_onnxruntime_int8_static_reads_what_its_session_runs(ort_static, minilm):
    from enginebench.models.onnx_export import onnx_encoder

    q = ort_static.details["quantization"]
    assert ort_static.executed_precision == "int8-static"
    assert q["weights"] == "int8" and q["activations"] == "uint8" and q["scheme"].startswith("static w8a8")
    assert "QLinearMatMul" in q["ops"]  # the session fused the QDQ pairs into integer MatMuls
    # the share from a direct count on the float export: every weight MatMul but the FFN's (non-square weights)
    exported = onnx_outline(onnx_encoder(minilm)[0])
    weights = {i.name: tuple(i.dims) for i in exported.graph.initializer}
    flops = {True: 0, False: 0}
    for node in exported.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape and len(shape) == 2:
            flops[shape[0] == shape[1]] += shape[0] * shape[1]
    assert q["share_of_matmul_flops"] == pytest.approx(flops[True] / (flops[True] + flops[False]), abs=1e-4)
    assert sorted(q["layers_kept"]) == ["/transformer/encoder/layer.*/intermediate/dense/MatMul",
                                        "/transformer/encoder/layer.*/output/dense/MatMul"]
    # QDQ reaches both attention products in spite of MatMulConstBOnly, and the session fuses them: integer ops
    assert q["attention_products"] == {"int8": 12, "total": 12}
    gemm = ort_static.details["int8_gemm"]
    assert gemm["saturation_free"] and max(-gemm["weight_range"][0], gemm["weight_range"][1]) <= 64


def test_onnxruntime_unfused_qdq_is_reported_as_the_fp32_it_runs(minilm, corpus):
    session = load_static("onnxruntime", minilm, [corpus], graph_optimization="disable")
    q = session.details["quantization"]
    assert session.executed_precision == "fp32"
    assert q["share_of_matmul_flops"] == 0 and q["qdq_left_float"] > 0


def test_openvino_int8_static_reads_the_runtime_graph(ov_static):
    q = ov_static.details["quantization"]
    assert ov_static.executed_precision == "int8-static"
    assert q["weights"] == "int8" and q["activations"] in ("uint8", "int8") and q["scheme"].startswith("static w8a8")
    assert q["layers_kept"] == ["/transformer/encoder/layer.*/output/dense/MatMul"]  # the ignored scope
    assert 0 < q["share_of_matmul_flops"] < 1
    gemm = ov_static.details["int8_gemm"]
    assert sum(gemm["kernels"].values()) == q["matmuls"]["quantized"]
    assert max(-gemm["weight_range"][0], gemm["weight_range"][1]) <= 64  # 7-bit: no int16 saturation without VNNI
    assert not any(kernel.startswith("undef") for kernel in gemm["kernels"])  # read after kernels were chosen


def test_openvino_int8_static_counts_the_attention_products_nncf_quantized(ov_static):
    """NNCF's transformer preset fake-quantizes both operands of Q·Kᵀ and neither of P·V (the softmax's output).
    The plugin fuses each attention block into one node that keeps only P·V's name; that node's inputs are Q, K,
    the mask and V, so its two integer inputs are Q·Kᵀ's operands running int8."""
    import openvino as ov

    from enginebench.engines.openvino import openvino_weight_matmuls

    products = openvino_weight_matmuls(ov.Core().read_model(ov_static.details["ir_path"]))[1]["activation_matmuls"]
    assert len(products) == 12
    assert sorted(n.rsplit("/", 1)[-1] for n, quantized in products.items() if quantized) == ["MatMul"] * 6
    integer_pairs = 0
    for op in ov_static.compiled.get_runtime_model().get_ordered_ops():
        names = op.get_rt_info()["originalLayersNames"].astype(str).split(",")
        if any(name.endswith("attention/self/MatMul_1") for name in names):
            integer = [p for p in op.inputs() if p.get_element_type().get_type_name() in ("u8", "i8")]
            integer_pairs += len(integer) == 2
    assert ov_static.details["quantization"]["attention_products"] == {"int8": integer_pairs, "total": 12}


@pytest.mark.slow
def test_openvino_every_linear_in_int8_keeps_8_bit_weights_only_where_vnni_sums_cannot_saturate(minilm, corpus):
    """int8_layers=all: where oneDNN has VNNI the weights keep all 8 bits and NNCF's own SmoothQuant (the settings
    that kept every Linear int8 within 0.99 on the corpus); without it, 7 bits, as every int8 MatMul without VNNI
    must. Read back from the quantized weights and the kernels that ran, whatever this CPU offers."""
    from enginebench.measure.cpu_features import onednn_isa_cap, vnni_available

    session = load_static("openvino", minilm, [corpus], int8_layers="all")
    q, gemm = session.details["quantization"], session.details["int8_gemm"]
    assert q["layers_kept"] == [] and q["share_of_matmul_flops"] == pytest.approx(1.0)
    widest = max(-gemm["weight_range"][0], gemm["weight_range"][1])
    settings = session.details["int8_settings"]
    assert gemm["vnni"] == vnni_available(cap=onednn_isa_cap())
    if gemm["vnni"]:
        assert widest > 64 and settings["overflow_fix"].startswith("DISABLE")
        assert settings["smooth_quant_alpha_matmul"] == "nncf's default" and settings["ignored_scope"] == "none"
    else:
        assert widest <= 64 and settings["overflow_fix"].startswith("ENABLE")


def test_the_label_says_static_w8a8_and_its_share(ort_static, ov_static):
    from enginebench.store.labels import precision_label
    from enginebench.store.model import Result

    for session, share in ((ort_static, "33%"), (ov_static, "67%")):
        result = Result(engine="onnxruntime", model="minilm", precision="int8-static", scenario="latency",
                        workload="corpus", batch_size=1, seq_len=128, workers=1, threads=2, samples=[1_000_000],
                        latency_ms={"median": 1.0, "ci95": [0.9, 1.1]}, verdict={"ok": True, "reasons": []},
                        executed_precision=session.executed_precision, details=session.details)
        assert precision_label(result) == f"int8-static (w8a8, {share} of MatMul FLOPs)"


def test_calibration_cost_and_identity_are_recorded(ort_static, ov_static):
    for session in (ort_static, ov_static):
        details = session.details
        assert details["calibration"]["items"] == details["int8_cost"]["calibration_items"] > 0
        assert details["int8_cost"]["quantize_s"] > 0 and details["calibration"]["method"]
    assert 0 < ort_static.details["int8_cost"]["calibration_s"] <= ort_static.details["int8_cost"]["quantize_s"]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_calibrated_artifact_is_reused_on_the_next_load(engine, minilm, corpus, ort_static, ov_static):
    first = {"onnxruntime": ort_static, "openvino": ov_static}[engine]
    again = load_static(engine, minilm, [corpus])
    path_key = "onnx_path" if engine == "onnxruntime" else "ir_path"
    assert again.details["int8_cached"] and again.details[path_key] == first.details[path_key]
    assert again.details["int8_cost"] == first.details["int8_cost"]  # what it cost when built, kept with it
    other = load_static(engine, minilm, [build_workload("corpus", minilm.path, seed=1)])
    assert not other.details["int8_cached"] and other.details[path_key] != first.details[path_key]


# --- the ONNX walker on small hand-made graphs ------------------------------------------------------------------

def _qdq_matmul_graph(activation_zero_point_type):
    """x -> QuantizeLinear -> DequantizeLinear -> MatMul(DequantizeLinear(int8 weight [4, 3]))."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((4, 3), np.int8), "w_q"),
             numpy_helper.from_array(np.full(3, 0.1, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(3, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, activation_zero_point_type), "x_zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="q"),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq", axis=1),
             helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="layer.0.dense")]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    return helper.make_model(graph)


@pytest.mark.parametrize("zero_point_type, activations", [(np.uint8, "uint8"), (np.int8, "int8")])
def test_qdq_activations_take_the_type_of_their_zero_point(zero_point_type, activations):
    from enginebench.measure.quantization import onnx_quantization

    q = onnx_quantization(_qdq_matmul_graph(zero_point_type), "test")
    assert q["activations"] == activations and q["share_of_matmul_flops"] == 1.0
    assert q["scheme"] == f"static w8a8 (per-channel int8 weights, static per-tensor {activations} activations)"


def test_a_qdq_matmul_left_unfused_in_a_sessions_graph_counts_as_float():
    from enginebench.measure.quantization import onnx_quantization, short_label

    q = onnx_quantization(_qdq_matmul_graph(np.uint8), "test", qdq_runs_float=True)
    assert q["share_of_matmul_flops"] == 0 and q["qdq_left_float"] == 1 and q["layers_kept"] == ["layer.0.dense"]
    assert short_label(q) == "no MatMul quantized"


# --- end to end -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_enginebench_run_measures_int8_static(tmp_path):
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "enginebench", "run", "--engine", "onnxruntime,openvino",
                        "--precision", "int8-static", "--workload", "corpus", "--scenario", "latency",
                        "--batch-size", "1", "--duration", "0.2", "--min-samples", "3", "--warmup", "0.05",
                        "--repeat", "1", "--db", str(tmp_path / "bench.db"), "--json"],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)["results"]
    assert sorted(r["engine"] for r in results) == ["onnxruntime", "openvino"]
    for r in results:
        assert r["status"] == "ok" and r["executed_precision"] == "int8-static", r.get("error")
        assert r["fidelity"]["ok"] and r["fidelity"]["threshold"] == 0.99
        assert r["details"]["quantization"]["share_of_matmul_flops"] > 0
        assert r["details"]["calibration"]["items"] > 0
