"""torch-compile int8-static (PT2E, X86InductorQuantizer): fidelity on MiniLM, what the label says, the
calibration inputs kept apart from the measured ones, the cached program, and the read-back of what ran.

The fidelity bound is the project's reduced-precision threshold (0.99) with and without VNNI: the weights use
7 bits, so oneDNN's int16 byte-pair sums on AVX2 cannot saturate (models/torch_static_quantize.py); one test runs
the session with oneDNN capped at AVX2 in a subprocess and expects the same embeddings.
"""

import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from helpers.sessions import embed, load_session

from enginebench.engines import require_engine
from enginebench.measure.fidelity import compare_embeddings
from enginebench.measure.quantization import WeightMatmul
from enginebench.models.torch_static_quantize import SCHEME, WEIGHT_RANGE, executed_layers, why_not_pt2e
from enginebench.workloads.calibration import calibration_set

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

needs_pt2e = pytest.mark.skipif(why_not_pt2e() is not None, reason=str(why_not_pt2e()))


def load_static(model, measured, threads=2, **options):
    cls = require_engine("torch-compile")
    return cls().load(model, "int8-static", cls.make_options(threads, {k: str(v) for k, v in options.items()}),
                      measured=measured)


def rows(batch) -> set[bytes]:
    return {row.tobytes() for row in batch.input_ids}


@pytest.fixture(scope="module")
def pt2e_static(minilm, corpus):
    inputs = corpus.fidelity_inputs()  # compiled in load(): the fidelity run below compiles nothing more
    return load_static(minilm, [corpus], warmup_batch=inputs.size, warmup_seq=inputs.seq_len)


# --- fast: the offer, the reasons, the read-back arithmetic -----------------------------------------------------

def test_int8_static_is_offered_by_torch_compile_only_where_pt2e_runs(monkeypatch):
    import importlib.util
    import platform

    cls = require_engine("torch-compile")
    assert "int8-static" in cls.describe().precisions
    assert "does not offer int8" in cls.why_not_precision("int8")  # dynamic int8 stays the eager engine's
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))
    assert "torchao is not installed" in cls.why_not_precision("int8-static")
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    reason = cls.why_not_precision("int8-static")
    assert "x86" in reason and "aarch64" in reason and "\n" not in reason


def test_layers_count_as_int8_only_where_an_int8_kernel_of_their_shape_ran():
    layers = [WeightMatmul("a.q", 4, 4, True), WeightMatmul("a.k", 4, 4, True), WeightMatmul("up", 4, 8, True),
              WeightMatmul("down", 8, 4, False)]
    ran, unfused = executed_layers(layers, Counter({(4, 4): 1, (4, 8): 1}))
    assert [m.quantized for m in ran] == [True, False, True, False] and unfused == 1
    ran, unfused = executed_layers(layers, Counter())
    assert not any(m.quantized for m in ran) and unfused == 3


# --- the session on MiniLM ---------------------------------------------------------------------------------------

@needs_pt2e
@pytest.mark.slow
def test_int8_static_keeps_fidelity_on_measured_inputs(pt2e_static, corpus, titles, reference, minilm):
    fidelity = compare_embeddings(embed(pt2e_static, corpus.fidelity_inputs()), reference, "int8-static")
    print(f"torch-compile int8-static corpus: min cosine {fidelity['value']:.6f}")
    assert fidelity["ok"] and fidelity["threshold"] == 0.99, fidelity
    titles_reference = embed(load_session("torch", minilm), titles.fidelity_inputs())
    fidelity = compare_embeddings(embed(pt2e_static, titles.fidelity_inputs()), titles_reference, "int8-static")
    assert fidelity["ok"], fidelity


@needs_pt2e
@pytest.mark.slow
def test_executed_precision_and_record_say_what_ran(pt2e_static, minilm):
    import torch

    from enginebench.models.torch_encoder import load_sentence_encoder

    q = pt2e_static.details["quantization"]
    assert pt2e_static.executed_precision == "int8-static"
    assert q["scheme"] == SCHEME and q["weights"] == "int8" and q["activations"] == "uint8"
    assert 0 < q["share_of_matmul_flops"] < 1
    # the share from a direct count on the float module: every encoder Linear but the FFN down-projections
    linears = [(n, m) for n, m in load_sentence_encoder(minilm.path).named_modules()
               if isinstance(m, torch.nn.Linear) and "pooler" not in n]
    flops = {True: 0, False: 0}
    for _, layer in linears:
        flops[layer.in_features <= layer.out_features] += layer.in_features * layer.out_features
    assert q["share_of_matmul_flops"] == pytest.approx(flops[True] / (flops[True] + flops[False]), abs=1e-4)
    assert q["layers_kept"] == ["transformer.encoder.layer.*.output.dense"]
    # every int8 layer of the converted program ran as a oneDNN int8 kernel, at each compiled shape
    assert q["int8_kernel_calls"] == q["matmuls"]["quantized"] == 30 and "quantized_but_ran_float" not in q
    assert set(pt2e_static.details["int8_kernel_calls_by_shape"].values()) == {30}
    gemm = pt2e_static.details["int8_gemm"]
    assert gemm["saturation_free"] and WEIGHT_RANGE[0] <= gemm["weight_range"][0] < gemm["weight_range"][1] <= 63
    assert "freezing" in pt2e_static.details["compile"]


@needs_pt2e
@pytest.mark.slow
def test_the_label_says_static_w8a8_and_its_share(pt2e_static):
    from enginebench.store.labels import precision_label
    from enginebench.store.model import Result

    result = Result(engine="torch-compile", model="minilm", precision="int8-static", scenario="latency",
                    workload="corpus", batch_size=1, seq_len=128, workers=1, threads=2, samples=[1_000_000],
                    latency_ms={"median": 1.0, "ci95": [0.9, 1.1]}, verdict={"ok": True, "reasons": []},
                    executed_precision=pt2e_static.executed_precision, details=pt2e_static.details)
    assert precision_label(result) == "int8-static (w8a8, 67% of MatMul FLOPs)"


@needs_pt2e
@pytest.mark.slow
def test_calibration_inputs_are_apart_from_the_measured_ones(pt2e_static, minilm, corpus):
    details = pt2e_static.details
    calibration = calibration_set(minilm.path, [corpus])  # what the session was told it is measured on
    assert details["calibration"]["identity"] == calibration.identity()
    assert details["calibration"]["items"] == details["int8_cost"]["calibration_items"] == calibration.size > 0
    assert "assumed" not in details["calibration"]["kept_apart_from"]
    assert not rows(calibration.batch) & rows(corpus.pool)
    assert not rows(calibration.batch) & rows(corpus.fidelity_inputs())
    cost = details["int8_cost"]
    assert cost["calibration_s"] > 0 and cost["quantize_s"] >= cost["calibration_s"]


@needs_pt2e
@pytest.mark.slow
def test_the_converted_program_is_cached_per_calibration_set(pt2e_static, minilm, corpus):
    from enginebench.models.torch_encoder import load_sentence_encoder
    from enginebench.models.torch_static_quantize import program_key, quantized_program
    from enginebench.workloads import build_workload

    calibration = calibration_set(minilm.path, [corpus])
    path, again = quantized_program(minilm, load_sentence_encoder(minilm.path), calibration, "sdpa")
    assert again["int8_cached"] and str(path) == pt2e_static.details["pt2_path"]
    assert again["int8_cost"] == pt2e_static.details["int8_cost"]  # what it cost when built, kept with it
    # another calibration set or another attention graph is another program (building one is slow: the keys)
    other = calibration_set(minilm.path, [build_workload("corpus", minilm.path, seed=1)])
    keys = {program_key(minilm, calibration, "sdpa"), program_key(minilm, other, "sdpa"),
            program_key(minilm, calibration, "eager")}
    assert len(keys) == 3 and program_key(minilm, calibration, "sdpa") in str(path)


@needs_pt2e
@pytest.mark.slow
def test_a_backend_that_runs_no_int8_kernel_reports_fp32(minilm, corpus):
    from enginebench.measure.quantization import short_label

    session = load_static(minilm, [corpus], backend="aot_eager", warmup_batch=2)
    q = session.details["quantization"]
    assert session.executed_precision == "fp32"
    assert q["share_of_matmul_flops"] == 0 and q["int8_kernel_calls"] == 0 and q["quantized_but_ran_float"] == 30
    assert short_label(q) == "no MatMul quantized"


def test_every_linear_takes_8_bit_weights_only_where_vnni_sums_them(cpu_features, monkeypatch):
    from enginebench.measure.cpu_features import vnni_available
    from enginebench.models.torch_static_quantize import FULL_WEIGHT_RANGE, settings, weight_range

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert weight_range("no-ffn-down") == WEIGHT_RANGE  # the default: 7 bits on every CPU
    assert weight_range("all") == (FULL_WEIGHT_RANGE if vnni_available() else WEIGHT_RANGE)
    if cpu_features.narrowed_to == "avx2":
        assert weight_range("all") == WEIGHT_RANGE
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN told to act without VNNI: no 8-bit weights
    assert weight_range("all") == WEIGHT_RANGE
    assert settings("all")["fp32_layers"].startswith("none") and settings("no-ffn-down") != settings("all")


@needs_pt2e
@pytest.mark.slow
def test_every_linear_in_int8_runs_int8_kernels_and_is_keyed_apart(minilm, corpus, reference):
    from enginebench.models.torch_static_quantize import program_key, weight_range

    inputs = corpus.fidelity_inputs()
    session = load_static(minilm, [corpus], int8_layers="all", warmup_batch=inputs.size, warmup_seq=inputs.seq_len)
    q = session.details["quantization"]
    assert session.executed_precision == "int8-static" and q["share_of_matmul_flops"] == pytest.approx(1.0)
    assert q["int8_kernel_calls"] == q["matmuls"]["quantized"] == 36 and not q.get("layers_kept")
    low, high = weight_range("all")
    gemm = session.details["int8_gemm"]
    assert low <= gemm["weight_range"][0] < gemm["weight_range"][1] <= high
    assert high == 63 or gemm["vnni"]  # 8-bit weights only where VNNI sums them
    fidelity = compare_embeddings(embed(session, inputs), reference, "int8-static")
    print(f"torch-compile int8-static, every Linear, weights in [{low}, {high}]: min cosine {fidelity['value']:.6f}")
    assert fidelity["value"] > 0.98  # near the 0.99 bound: whether it passes is what tune measures and decides
    calibration = calibration_set(minilm.path, [corpus])
    assert program_key(minilm, calibration, "sdpa", "all") != program_key(minilm, calibration, "sdpa")
    assert program_key(minilm, calibration, "sdpa", "all") in session.details["pt2_path"]


_AVX2_CHILD = """
import json, sys
import numpy as np
import torch
from enginebench.engines import require_engine
from enginebench.models import resolve_model
from enginebench.models.torch_static_quantize import _config, compile_settings, pt2e, quiet_torchao
from enginebench.workloads import build_workload

model = resolve_model("minilm")
corpus = build_workload("corpus", model.path, seq_len=128, seed=0)
inputs = corpus.fidelity_inputs()
cls = require_engine("torch-compile")
session = cls().load(model, "int8-static", cls.make_options(2, {"warmup_batch": str(inputs.size)}), measured=[corpus])
np.save(sys.argv[1], session.run(session.prepare(inputs)))

# one FFN-sized Linear on full-range uint8 activations: oneDNN's int8 GEMM against the reference math
prepare_pt2e, convert_pt2e, xiq, _ = pt2e()
errors = {}
for bits, config in ((7, _config(xiq)), (8, xiq.get_default_x86_inductor_quantization_config())):
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(1536, 384).eval(), torch.rand(64, 1536) * 10
    with quiet_torchao():
        prepared = prepare_pt2e(torch.export.export(linear, (x,)).module(), xiq.X86InductorQuantizer().set_global(config))
        prepared(x)
        converted = convert_pt2e(prepared)
    with torch.no_grad(), compile_settings():
        reference, compiled = converted(x), torch.compile(converted)
        compiled(x)
        errors[bits] = float((compiled(x) - reference).abs().max() / reference.abs().max())
print(json.dumps({"executed": session.executed_precision, "gemm": session.details["int8_gemm"],
                  "cached": session.details["int8_cached"], "gemm_error": errors}))
"""


@needs_pt2e
@pytest.mark.slow
def test_without_vnni_the_int8_sums_stay_exact_and_fidelity_holds(corpus, reference, tmp_path):
    """oneDNN capped at AVX2 sums u8 x s8 byte pairs in int16: 7-bit weights keep the GEMM exact (8-bit ones
    saturate, which shows the cap took effect), and the session keeps the fidelity bound. The embeddings are
    not bit-equal to the VNNI run's: oneDNN's fp32 kernels change too, and a last-bit difference moves some
    activations to the next uint8 step (min cosine between the two runs 0.9985 here)."""
    out = tmp_path / "avx2.npy"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}  # the artifact cache is shared: the program is reused
    p = subprocess.run([sys.executable, "-c", _AVX2_CHILD, str(out)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert facts["executed"] == "int8-static" and facts["cached"]
    gemm = facts["gemm"]
    assert gemm["vnni"] is False and gemm["onednn_max_cpu_isa"] == "AVX2" and gemm["saturation_free"]
    assert facts["gemm_error"]["7"] < 1e-5 < 1e-3 < facts["gemm_error"]["8"], facts["gemm_error"]
    fidelity = compare_embeddings(np.load(out), reference, "int8-static")
    print(f"torch-compile int8-static, oneDNN capped at AVX2: min cosine {fidelity['value']:.6f}")
    assert fidelity["ok"], fidelity
