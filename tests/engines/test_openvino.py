"""OpenVINO CPU: fidelity per precision vs torch fp32, and the precision it really ran (read back, not assumed)."""

import pytest

from helpers.sessions import embed, load_session
from enginebench.engines import engine_class
from enginebench.measure.fidelity import compare_embeddings

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

pytest.importorskip("openvino")


def _fidelity(session, corpus, reference, precision):
    out = embed(session, corpus.fidelity_inputs())
    f = compare_embeddings(out, reference, precision)
    print(f"openvino {precision} ({session.executed_precision}): min cosine {f['value']:.6f}")
    return f


def test_fp32_really_runs_f32_and_matches_torch(minilm, corpus, reference):
    # OpenVINO's CPU default on a bf16-capable CPU is bf16: fp32 only holds if the engine asks for f32
    session = load_session("openvino", minilm, "fp32")
    f = _fidelity(session, corpus, reference, "fp32")
    assert session.details["inference_precision"] == "f32" and session.executed_precision == "fp32"
    assert f["ok"] and f["max_abs_diff"] < 1e-4


def test_bf16_runs_bf16_within_reduced_threshold(minilm, corpus, reference):
    if engine_class("openvino").why_not_precision("bf16"):
        pytest.skip(engine_class("openvino").why_not_precision("bf16"))
    session = load_session("openvino", minilm, "bf16")
    f = _fidelity(session, corpus, reference, "bf16")
    assert session.executed_precision == "bf16" and session.details["inference_precision"] == "bf16"
    assert f["ok"] and f["value"] < 0.999999  # bf16 cannot match fp32 to the last digit


def test_int8_compresses_weights_into_a_cached_ir(minilm, corpus, reference):
    if engine_class("openvino").why_not_precision("int8"):  # e.g. under an AVX2 oneDNN cap on an AVX-512 CPU
        pytest.skip(engine_class("openvino").why_not_precision("int8"))
    session = load_session("openvino", minilm, "int8")
    f = _fidelity(session, corpus, reference, "int8")
    assert f["ok"] and f["value"] < 0.99999
    # w8a8 where the plugin quantized the activations too (test_quantization_labels checks which), else w8a32
    applied = session.details["dynamic_quantization"]["applied"]
    assert session.executed_precision == ("int8" if applied else "int8-weights/fp32")
    assert session.details["ir_path"].endswith("model.xml")
    again = load_session("openvino", minilm, "int8")
    assert again.details["int8_cached"] is True and again.details["ir_path"] == session.details["ir_path"]


def test_options_reach_the_compiled_model(minilm, corpus, reference):
    session = load_session("openvino", minilm, "fp32", threads=2, hint="THROUGHPUT", num_streams=2)
    assert session.details["performance_hint"] == "THROUGHPUT"
    assert session.details["num_streams"] == 2 and session.details["threads_used"] == 2
    assert _fidelity(session, corpus, reference, "fp32")["ok"]
    capped = load_session("openvino", minilm, "fp32", threads=1, num_streams=2)  # a stream needs a thread
    assert capped.details["num_streams"] == 1 and capped.details["num_streams_requested"] == 2


def test_bad_hint_is_refused_with_the_allowed_values(minilm):
    with pytest.raises(ValueError, match="LATENCY, THROUGHPUT"):  # by the options' check, before any load
        load_session("openvino", minilm, "fp32", hint="FASTEST")


def test_bf16_needs_the_cpu_capability(monkeypatch, cpu_features):
    """Offered only where the CPU features in use have bf16 instructions and OpenVINO's own report lists BF16."""
    import openvino as ov

    cls = engine_class("openvino")
    reported = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    has_bf16 = cpu_features.has_any({"avx512_bf16", "amx_bf16"})
    reason = cls.why_not_precision("bf16")
    assert (reason is None) is (has_bf16 and reported)
    if not has_bf16:  # the CPU features decide first, and the reason says which
        assert "avx512_bf16" in reason
        # "left out by ENGINEBENCH_CPU_FEATURES" where the CPU has bf16 and the narrowed set drops it; on a real
        # AVX2-only CPU, narrowed or not, "which this CPU does not have"
        left_out = cpu_features.narrowed_to is not None and bool(cpu_features.real & {"avx512_bf16", "amx_bf16"})
        assert left_out is ("ENGINEBENCH_CPU_FEATURES=avx2" in reason), reason
        assert left_out is not ("which this CPU does not have" in reason), reason
    real = ov.Core.get_property
    monkeypatch.setattr(ov.Core, "get_property", lambda self, device, name: ["FP32", "INT8"]
                        if name == "OPTIMIZATION_CAPABILITIES" else real(self, device, name))
    assert "bf16" in cls.why_not_precision("bf16")  # OpenVINO's own report without BF16
    assert cls.why_not_precision("fp32") is None
    assert "does not offer fp16" in cls.why_not_precision("fp16")


def test_a_session_that_shares_the_cpus_is_not_pinned(minilm):
    """OpenVINO pins a process's threads from the first core: two single-threaded workers pinned would share
    one core. auto pins only a session whose threads cover every CPU this process may use."""
    import os

    cpus = len(os.sched_getaffinity(0))
    whole = load_session("openvino", minilm, "fp32", threads=cpus)
    assert whole.details["cpu_pinning"] is True and whole.details["cpu_pinning_requested"] == "auto"
    if cpus > 1:
        shared = load_session("openvino", minilm, "fp32", threads=1)
        assert shared.details["cpu_pinning"] is False
    forced = load_session("openvino", minilm, "fp32", threads=1, pinning="true")
    assert forced.details["cpu_pinning"] is True


def test_static_shapes_compile_one_model_per_input_shape_and_compute_the_same(minilm, corpus, titles):
    dynamic = load_session("openvino", minilm, "fp32")
    static = load_session("openvino", minilm, "fp32", shapes="static")
    assert static.details["shapes"] == "static" and dynamic.details["shapes"] == "dynamic"
    batches = [corpus.fidelity_inputs(), titles.batch(0, 4), corpus.fidelity_inputs()]
    prepared = [static.prepare(b) for b in batches]
    requests = [request for request, _ in prepared]
    assert requests[0] is requests[2] and requests[0] is not requests[1]  # one compiled model per shape
    for (request, _), batch in zip(prepared, batches):
        shapes = [port.get_partial_shape() for port in request.get_compiled_model().inputs]
        assert all(s.is_static and list(s.to_shape()) == [batch.size, batch.seq_len] for s in shapes)
    for p, batch in zip(prepared, batches):
        assert abs(static.run(p) - embed(dynamic, batch)).max() < 1e-5
