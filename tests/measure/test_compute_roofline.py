"""Encoder results as a share of the machine's compute roofline (measure/compute_roofline.py): the FLOP count of
the model's structure, the split by executed precision, the share with its CI, and what a table says without
ceilings."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from enginebench.measure.compute_roofline import NO_CEILINGS, encoder_flops, encoder_structure
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.latency import Latency
from enginebench.scenarios.throughput import Throughput

MINILM = {"layers": 6, "hidden_size": 384, "heads": 12, "intermediate_size": 1536}
SEQ = 128


def _onnx_matmul_flops(path: Path, seq: int) -> float:
    """FLOPs of every MatMul and Gemm in an ONNX graph (2 per multiply-add), its inputs fixed at [1, seq] and
    every shape inferred (onnxruntime's symbolic inference: onnx's own stops at the Shape ops of the position
    ids): an independent count of what the graph computes."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        dims[0].dim_value, dims[1].dim_value = 1, seq
    del model.graph.value_info[:]  # the exporter's symbolic shapes: inferred again from the fixed inputs
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        a, b = shapes[node.input[0]], shapes[node.input[1]]
        assert all(a) and all(b), f"{node.name}: shape not inferred"
        k = a[-1]
        n = b[-2] if node.op_type == "Gemm" and any(x.name == "transB" and x.i for x in node.attribute) else b[-1]
        total += 2.0 * float(np.prod(a[:-1])) * k * n
    return total


@pytest.mark.engine  # exports MiniLM to ONNX with torch
def test_minilm_flops_at_128_tokens_match_its_onnx_graph(minilm):
    from enginebench.models.onnx_export import onnx_encoder

    structure = encoder_structure(json.loads((Path(minilm.path) / "config.json").read_text()))
    assert structure == MINILM
    counted = sum(encoder_flops(structure, SEQ).values())
    path, _ = onnx_encoder(minilm)
    assert counted == pytest.approx(_onnx_matmul_flops(path, SEQ), rel=0.01)
    assert counted == pytest.approx(2.87e9, rel=0.01)
    assert encoder_flops(structure, SEQ)["linear"] / counted == pytest.approx(0.95, abs=0.01)


def test_attention_grows_with_the_square_of_the_sequence():
    short, long = encoder_flops(MINILM, 64), encoder_flops(MINILM, 128)
    assert long["linear"] == pytest.approx(2 * short["linear"])
    assert long["attention"] == pytest.approx(4 * short["attention"])


def _speed(fp32: float | None = 200.0, int8: float | None = 400.0, bf16: float | None = None) -> dict:
    by = {p: v for p, v in (("fp32", fp32), ("int8", int8), ("bf16", bf16)) if v}
    return {"bandwidth_gbs": 20.0, "gemm_gflops": fp32, "measured_at": "2026-12-03T00:00:00+00:00",
            "gemm_gflops_by_precision": by, "gemm_emulated": {}}


def _measurement(call_s: float, batch: int, executed: str = "fp32", quantization: dict | None = None,
                 workers: int = 1) -> Measurement:
    rng = np.random.default_rng(0)
    samples = [(call_s * 1e9 * (1 + 0.01 * rng.standard_normal(200))).astype(np.int64) for _ in range(workers)]
    return Measurement(worker_samples=samples, items_per_call=batch, tokens_per_item=SEQ, load_s=1.0,
                       peak_rss_mb=100.0, executed_precision=executed, wall_s=1.0,
                       details={"quantization": quantization} if quantization else {})


def _details(speed: dict | None) -> dict:
    return {"workload": {"name": "corpus", "seq_len": SEQ}, "model_structure": MINILM, "machine_speed": speed}


def _figure(scenario, precision: str, m: Measurement, speed: dict | None) -> dict:
    cell = Cell("x", precision, scenario.name, "corpus", m.items_per_call, len(m.worker_samples), 1)
    return scenario.figures(cell, [m], _details(speed))["roofline"]


def _items_per_s(m: Measurement) -> float:
    return sum(m.items_per_call / (np.mean(s) / 1e9) for s in m.worker_samples)


def test_the_share_is_items_per_s_over_one_over_the_sum_of_flops_over_ceilings():
    m = _measurement(1.0, 32)
    figure = _figure(Latency(), "fp32", m, _speed())
    flops = sum(encoder_flops(MINILM, SEQ).values())
    bound = 200e9 / flops
    assert figure["roofline_items_per_s"] == pytest.approx(bound)
    assert figure["pct_of_roofline"] == pytest.approx(100 * _items_per_s(m) / bound, rel=1e-6)
    lo, hi = figure["ci95"]
    assert lo < figure["pct_of_roofline"] < hi
    assert figure["precision"] == "fp32" and figure["unknown"] is None


def test_an_emulated_precision_is_bounded_by_the_faster_of_its_ceiling_and_fp32s():
    """On AVX2 torch.matmul's bf16 ran 1 GFLOP/s while torch's bf16 Linear ran 19: a bf16 row was put at 1920% of
    a roofline of 1 GFLOP/s. An emulated precision's bound is the fp32 ceiling where that is faster, and the note
    says so; a native one, or an emulated one faster than fp32 (int8 through vpmaddubsw), keeps its own."""
    m = _measurement(4.7, 32, "bf16")
    flops = sum(encoder_flops(MINILM, SEQ).values())
    emulated = {**_speed(fp32=188.0, bf16=1.0), "gemm_emulated": {"bf16": "emulated: no AVX512_BF16"}}
    figure = _figure(Latency(), "bf16", m, emulated)
    assert figure["roofline_items_per_s"] == pytest.approx(188e9 / flops)
    assert figure["pct_of_roofline"] < 100 and figure["emulated"] == ["bf16"]
    assert {(p["precision"], p["ceiling_gflops"], p.get("ceiling_of")) for p in figure["parts"]} == {("bf16", 188.0, "fp32")}
    native = _figure(Latency(), "bf16", m, _speed(fp32=188.0, bf16=1.0))  # not marked emulated: its own ceiling
    assert native["roofline_items_per_s"] == pytest.approx(1e9 / flops) and native["pct_of_roofline"] > 100
    int8 = {**_speed(fp32=188.0, int8=363.0), "gemm_emulated": {"int8": "emulated: no VNNI"}}
    m8 = _measurement(0.45, 32, "int8", {"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 1.0})
    parts = {p["precision"]: p for p in _figure(Latency(), "int8", m8, int8)["parts"]}
    assert parts["int8"]["ceiling_gflops"] == 363.0 and "ceiling_of" not in parts["int8"]
    from enginebench.formats.tables.encoder import roofline_notes
    from enginebench.store.derive import build_result

    result = build_result(Cell("torch", "bf16", "latency", "corpus", 32, 1, 2), [(0, m)], model="minilm", seq_len=SEQ,
                          engine_version=None, engine_options={}, details=_details(emulated))
    note = roofline_notes([result])[0]
    assert "bf16 emulated on this CPU" in note and "bf16 bounded by the fp32 ceiling" in note and "fp32 188" in note


def test_int8_parts_use_the_int8_ceiling_and_the_rest_the_float_one():
    m = _measurement(0.5, 32, "int8", {"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 0.8})
    flops = encoder_flops(MINILM, SEQ)
    figure = _figure(Throughput(), "int8", m, _speed(fp32=200.0, int8=400.0))
    seconds = 0.8 * flops["linear"] / 400e9 + (0.2 * flops["linear"] + flops["attention"]) / 200e9
    assert figure["roofline_items_per_s"] == pytest.approx(1 / seconds)
    assert figure["pct_of_roofline"] == pytest.approx(100 * _items_per_s(m) * seconds, rel=1e-6)
    assert figure["precision"] == "int8"
    assert {p["precision"]: p["ceiling_gflops"] for p in figure["parts"]} == {"int8": 400.0, "fp32": 200.0}
    faster = _figure(Throughput(), "int8", m, _speed(fp32=200.0, int8=800.0))
    assert faster["roofline_items_per_s"] > figure["roofline_items_per_s"]
    fp32 = _figure(Throughput(), "fp32", _measurement(0.5, 32), _speed(fp32=200.0, int8=800.0))
    assert fp32["roofline_items_per_s"] == pytest.approx(200e9 / sum(flops.values()))


def test_attention_products_read_back_as_int8_count_against_the_int8_ceiling():
    """OpenVINO's NNCF quantizes Q·Kᵀ (6 of the 12 products), ONNX Runtime's QDQ both: counted against the fp32
    ceiling they would lower the roofline and overstate the share."""
    flops = encoder_flops(MINILM, SEQ)
    record = {"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 1.0}
    speed = _speed(fp32=200.0, int8=800.0)
    figures = {}
    for int8, total in ((0, 12), (6, 12), (12, 12)):
        m = _measurement(0.5, 32, "int8-static", {**record, "attention_products": {"int8": int8, "total": total}})
        figures[int8] = _figure(Throughput(), "int8-static", m, speed)
        share = int8 / total
        seconds = flops["linear"] / 800e9 + flops["attention"] * (share / 800e9 + (1 - share) / 200e9)
        assert figures[int8]["roofline_items_per_s"] == pytest.approx(1 / seconds)
    assert figures[0]["pct_of_roofline"] > figures[6]["pct_of_roofline"] > figures[12]["pct_of_roofline"]
    assert {p["what"] for p in figures[6]["parts"]} == {"linear (int8)", "attention products (int8)",
                                                         "attention products (fp32)"}
    unread = _measurement(0.5, 32, "int8-static", record)  # stored before the read-back: the products float
    assert _figure(Throughput(), "int8-static", unread, speed)["roofline_items_per_s"] == pytest.approx(
        figures[0]["roofline_items_per_s"])


def test_weights_only_int8_computes_in_float_and_bf16_uses_its_ceiling():
    weights_only = _measurement(0.5, 32, "int8-weights/fp32",
                                {"weights": "int8", "activations": "fp32", "share_of_matmul_flops": 1.0})
    flops = sum(encoder_flops(MINILM, SEQ).values())
    assert _figure(Latency(), "int8", weights_only, _speed())["roofline_items_per_s"] == pytest.approx(200e9 / flops)
    bf16 = _figure(Latency(), "bf16", _measurement(0.5, 32, "bf16"), _speed(bf16=800.0))
    assert bf16["roofline_items_per_s"] == pytest.approx(800e9 / flops)


def test_without_ceilings_there_is_no_figure_and_the_note_says_how_to_get_one():
    from enginebench.formats.tables.encoder import notes, table_rows
    from enginebench.store.derive import build_result

    m = _measurement(1.0, 32)
    for speed in (None, {"bandwidth_gbs": 20.0, "gemm_gflops": 200.0, "measured_at": "x",
                         "gemm_unknown": "measured under other CPU features"}):
        figure = _figure(Latency(), "fp32", m, speed)
        assert figure["pct_of_roofline"] is None and figure["roofline_items_per_s"] is None
        assert figure["unknown"] == NO_CEILINGS if speed is None else "other CPU features" in figure["unknown"]
        assert "`enginebench machine`" in figure["unknown"]
    cell = Cell("x", "fp32", "latency", "corpus", 32, 1, 1)
    result = build_result(cell, [(0, m)], model="minilm", seq_len=SEQ, engine_version=None, engine_options={},
                          details=_details(None))
    headers, rows, _ = table_rows([result])
    assert rows[0][headers.index("% roofline")] == "—"
    assert any("`enginebench machine`" in line for line in notes([result]))
    int8 = _figure(Latency(), "int8", _measurement(1.0, 32, "int8"), _speed())
    assert int8["pct_of_roofline"] is None and "int8" in int8["unknown"]


def test_a_result_carries_the_figure_in_its_json_and_table(tmp_path):
    from enginebench.formats.tables.encoder import notes, table_rows
    from enginebench.store.derive import build_result
    from enginebench.store.model import Result

    m = _measurement(1.0, 32)
    cell = Cell("x", "fp32", "latency", "corpus", 32, 1, 1)
    result = build_result(cell, [(0, m)], model="minilm", seq_len=SEQ, engine_version=None, engine_options={},
                          details=_details(_speed()))
    again = Result.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.roofline["pct_of_roofline"] == pytest.approx(result.roofline["pct_of_roofline"])
    headers, rows, _ = table_rows([result])
    shown = rows[0][headers.index("% roofline")]
    assert shown.startswith(f"{result.roofline['pct_of_roofline']:.0f} ± ")
    assert any(line.startswith("% roofline: ") and "fp32 200 GFLOP/s" in line for line in notes([result]))


def test_a_run_carries_ceilings_only_when_measured_under_its_cpu_features(cpu_features, monkeypatch):
    from enginebench.measure import peak

    # stored before AVX2's byte-pair int8 counted as native: whether it is emulated is derived on read
    stored = {"measured_at": "t", "bandwidth_gbs": 20.0, "gemm_gflops": 200.0,
              "details": {"cpu_features": {}, "gemm_gflops_by_precision": {"int8": 300.0, "bf16": 2.0},
                          "gemm_by_precision": {"int8": {"gflops": 300.0, "native": False, "note": "emulated"},
                                                "bf16": {"gflops": 2.0, "native": False, "note": "emulated"}}}}
    monkeypatch.setattr(peak, "cpu_flags", lambda: {"sse2", "avx", "fma", "avx2"})
    speed = peak.run_speed(stored)
    if cpu_features.narrowed_to:
        assert "gemm_gflops_by_precision" not in speed and speed["gemm_unknown"]
    else:
        assert speed["gemm_gflops_by_precision"] == {"fp32": 200.0, "int8": 300.0, "bf16": 2.0}
        assert speed["gemm_emulated"] == {"bf16": "emulated: the CPU has neither AVX512_BF16 nor AMX-BF16"}
        sources = peak.stored_ceilings(stored, "test").gemm_sources  # what `ops` prints of the same row
        assert "no VNNI" in sources["int8"] and "emulated" not in sources["int8"] and "emulated" in sources["bf16"]
        monkeypatch.setattr(peak, "cpu_flags", lambda: {"sse2", "avx"})  # no int8 multiply-adds either
        assert set(peak.run_speed(stored)["gemm_emulated"]) == {"bf16", "int8"}
    assert speed["bandwidth_gbs"] == 20.0


def test_recommend_says_the_picks_share_of_the_roofline_of_its_main_precision():
    from enginebench.analysis.recommend import Constraints, recommend
    from enginebench.store.derive import build_result
    from enginebench.store.model import Run

    def result(precision, call_s, quantization=None, speed=_speed()):
        measured = [(r, _measurement(call_s * (1 + 0.001 * r), 32, precision, quantization)) for r in range(3)]
        cell = Cell("onnxruntime", precision, "throughput", "corpus", 32, 1, 2)
        out = build_result(cell, measured, model="minilm", seq_len=SEQ, engine_version="1",
                           engine_options={"threads": 2}, details=_details(speed))
        out.fidelity = {"metric": "min_cosine", "value": 0.999, "ok": True, "threshold": 0.99}
        out.verdict = {"ok": True, "reasons": []}
        return out

    int8 = result("int8", 0.5, {"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 1.0})
    run = Run("r", "2026-12-03T00:00:00+00:00", {"hostname": "h", "cpu": "c"}, {"argv": []},
              [result("fp32", 0.9), int8])
    rec = recommend([run], Constraints(objective="throughput", min_fidelity=0.99))
    assert rec.best is int8
    text = "\n".join(rec.lines())
    figure = int8.roofline
    lo, hi = figure["ci95"]
    assert (f", {figure['pct_of_roofline']:.0f}% of this machine's int8 roofline (95% CI {lo:.0f}-{hi:.0f}%; the "
            f"roofline {figure['roofline_items_per_s']:.0f}/s)") in text
    assert rec.to_dict()["roofline"]["pct_of_roofline"] == pytest.approx(int8.roofline["pct_of_roofline"])
    unknown = result("int8", 0.5, {"weights": "int8", "activations": "uint8", "share_of_matmul_flops": 1.0}, None)
    rec = recommend([Run("r", "2026-12-03T00:00:00+00:00", {"hostname": "h", "cpu": "c"}, {"argv": []}, [unknown])],
                    Constraints(objective="throughput", min_fidelity=0.99))
    assert rec.best is unknown and not any("roofline" in line for line in rec.lines())


def test_the_fidelity_against_speed_chart_draws_the_roofline_as_a_vertical_line():
    from enginebench.formats.charts import fidelity_vs_speed
    from enginebench.store.derive import build_result

    def result(precision, call_s, speed):
        cell = Cell("onnxruntime", precision, "latency", "corpus", 32, 1, 2)
        out = build_result(cell, [(0, _measurement(call_s, 32, precision))], model="minilm", seq_len=SEQ,
                           engine_version="1", engine_options={}, details=_details(speed))
        out.fidelity = {"metric": "min_cosine", "value": 0.9999, "ok": True, "threshold": 0.999}
        return out

    def vertical(chart) -> list[float]:
        return [line.get_xdata()[0] for line in chart.figure.axes[0].get_lines()
                if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]

    known = [result("fp32", 1.0, _speed()), result("fp32", 0.8, _speed())]
    assert vertical(fidelity_vs_speed([("r", r) for r in known], decoder=False)) == pytest.approx(
        [known[0].roofline["roofline_items_per_s"]])
    unknown = [result("fp32", 1.0, None), result("fp32", 0.8, None)]
    assert vertical(fidelity_vs_speed([("r", r) for r in unknown], decoder=False)) == []


def _fake_gemm(calls: list, name: str, gflops: float):
    """A GEMM library's measure(n, runs) that gives `gflops` at every size and records each call in `calls`."""
    def measure(n: int, runs: int) -> dict:
        calls.append((name, n))
        return {"gflops": gflops, "n": n, "runs_s": [0.1], "library": f"{name} 1", "threads": 2}
    return measure


def test_machine_stops_timing_a_clearly_slower_gemm_at_the_larger_size(monkeypatch):
    from enginebench.measure import roofline
    from enginebench.measure.peak import gemm_source

    calls: list[tuple[str, int]] = []
    library = functools.partial(_fake_gemm, calls)

    monkeypatch.setitem(roofline.GEMM_LIBRARIES, "int8", (("slow", library("slow", 2.0)),
                                                         ("fast", library("fast", 356.0))))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    tried = roofline.time_gemms("int8", (1024, 2048), runs=3)
    assert calls == [("slow", 1024), ("fast", 1024), ("fast", 2048)]
    assert tried[0]["stopped"] and set(tried[0]["by_n"]) == {1024} and "stopped" not in tried[1]
    assert "slow timed at n=1024 only" in gemm_source(roofline.best_gemm("int8", tried, {"avx2"}))
    calls.clear()  # within 4x of the best, or of the fp32 floor: timed at every size
    monkeypatch.setitem(roofline.GEMM_LIBRARIES, "bf16", (("bf16", library("bf16", 60.0)),))
    roofline.time_gemms("bf16", (1024, 2048), runs=3, floor_gflops=189.0)
    assert calls == [("bf16", 1024), ("bf16", 2048)]
    calls.clear()
    roofline.time_gemms("bf16", (1024, 2048), runs=3, floor_gflops=1000.0)
    assert calls == [("bf16", 1024)]


def test_machine_times_an_emulated_gemm_in_its_first_pass_only(monkeypatch):
    """`enginebench machine` times every precision in 3 passes; a kernel clearly slower than fp32 in the first
    (torch's bf16 and int8 without AVX512_BF16 or VNNI: seconds a call) is not timed in the others, while the
    fast ones are timed in every pass and keep their best."""
    from enginebench.measure import roofline

    calls: list[tuple[str, int]] = []
    library = functools.partial(_fake_gemm, calls)

    monkeypatch.setitem(roofline.GEMM_LIBRARIES, "fp32", (("fp32", library("fp32", 190.0)),))
    monkeypatch.setitem(roofline.GEMM_LIBRARIES, "bf16", (("emulated-bf16", library("emulated-bf16", 1.0)),))
    monkeypatch.setitem(roofline.GEMM_LIBRARIES, "int8", (("emulated-int8", library("emulated-int8", 2.0)),
                                                         ("int8", library("int8", 360.0))))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    speed = roofline.measure_machine(triad_elements=1 << 16, gemm_n=128, runs=1, passes=3)
    timed = {name: [n for lib, n in calls if lib == name] for name in dict.fromkeys(lib for lib, _ in calls)}
    assert timed["emulated-bf16"] == [64] and timed["emulated-int8"] == [64]  # first pass, smaller size only
    assert timed["fp32"] == [64, 128] * 3 and timed["int8"] == [64, 128] * 3
    by_precision = speed["details"]["gemm_by_precision"]
    assert by_precision["bf16"]["gflops"] == 1.0 and by_precision["bf16"]["passes_gflops"] == [1.0]
    int8 = {t["library"].split()[0]: t for t in by_precision["int8"]["tried"]}
    assert len(int8) == 2  # one entry per library over the passes, the emulated one as timed in the first
    assert by_precision["int8"]["gflops"] == 360.0 and int8["emulated-int8"]["gflops"] == 2.0
    from enginebench.measure.peak import gemm_source  # and `enginebench machine` says so

    assert "emulated-int8 timed at n=64 in 1 of 3 passes only (clearly slower)" in gemm_source(by_precision["int8"])
    assert "emulated-bf16 timed at n=64 in 1 of 3 passes only" in gemm_source(by_precision["bf16"])


def test_the_frame_has_the_share_and_its_interval_and_nan_without_ceilings():
    from enginebench.store.derive import build_result
    from enginebench.store.frame import to_frame
    from enginebench.store.model import Run

    def result(speed):
        cell = Cell("x", "fp32", "latency", "corpus", 32, 1, 1)
        return build_result(cell, [(0, _measurement(1.0, 32))], model="minilm", seq_len=SEQ, engine_version=None,
                            engine_options={}, details=_details(speed))

    known, unknown = result(_speed()), result(None)
    frame = to_frame(Run("r", "2026-12-03T00:00:00+00:00", {}, {}, [known, unknown]))
    assert frame["pct_of_roofline"][0] == pytest.approx(known.roofline["pct_of_roofline"])
    assert [frame["pct_of_roofline_ci95_lo"][0], frame["pct_of_roofline_ci95_hi"][0]] == pytest.approx(
        known.roofline["ci95"])
    assert np.isnan(frame["pct_of_roofline"][1])


# --- the machine's speed beside a cell ----------------------------------------------------------------------------

def _probed(call_s: float, *gflops_pairs) -> list[Measurement]:
    out = []
    for before, after in gflops_pairs:
        m = _measurement(call_s, 32)
        m.details["gemm_probe"] = {"before": before, "after": after, "n": 1024, "threads": 2}
        out.append(m)
    return out


def _probed_figure(measurements, reference=100.0) -> dict:
    cell = Cell("x", "fp32", "throughput", "corpus", 32, 1, 1)
    speed = {**_speed(), "gemm_probe": {"gflops": reference, "n": 1024, "threads": 2}}
    return Throughput().figures(cell, measurements, _details(speed))["roofline"]


def test_the_share_beside_the_cell_scales_the_ceilings_by_the_median_probe():
    slow = _probed_figure(_probed(1.0, (40.0, 60.0), (50.0, 55.0), (45.0, 90.0)))
    beside = slow["beside"]
    assert beside["factor"] == pytest.approx(52.5 / 100) and beside["drifted"]  # median of 40 45 50 55 60 90
    assert beside["pct_of_roofline"] == pytest.approx(slow["pct_of_roofline"] / 0.525)
    assert beside["ci95"] == pytest.approx([c / 0.525 for c in slow["ci95"]])
    steady = _probed_figure(_probed(1.0, (95.0, 105.0), (90.0, 110.0)))
    assert steady["beside"]["factor"] == pytest.approx(1.0) and not steady["beside"]["drifted"]
    assert not _probed_figure(_probed(1.0, (120.0, 125.0)))["beside"]["drifted"]  # within 1.25x
    assert _probed_figure(_probed(1.0, (130.0, 130.0)))["beside"]["drifted"]  # a faster machine drifts too
    assert "beside" not in _figure(Throughput(), "fp32", _measurement(1.0, 32), _speed())  # no probe, no claim


def test_a_drifted_pick_says_both_shares_in_recommend_and_the_table_notes():
    from enginebench.analysis.recommend import roofline_clause
    from enginebench.formats.tables.encoder import notes, table_rows
    from enginebench.store.derive import build_result

    cell = Cell("onnxruntime", "fp32", "throughput", "corpus", 32, 1, 2)
    speed = {**_speed(), "gemm_probe": {"gflops": 100.0, "n": 1024, "threads": 2}}
    slow = build_result(cell, list(enumerate(_probed(1.0, (50.0, 50.0)))), model="minilm", seq_len=SEQ,
                        engine_version="1", engine_options={"threads": 2}, details=_details(speed))
    figure = slow.roofline
    clause = roofline_clause(slow)
    assert f"the machine ran at 50% of its stored GEMM speed beside it: {2 * figure['pct_of_roofline']:.0f}%" in clause
    line = next(x for x in notes([slow]) if "beside this cell" in x)
    assert line.startswith("% roofline* [1] ") and "numpy fp32 1024²: 50 against 100 GFLOP/s" in line
    headers, rows, _ = table_rows([slow, steady := build_result(
        cell, list(enumerate(_probed(1.0, (100.0, 100.0)))), model="minilm", seq_len=SEQ, engine_version="1",
        engine_options={"threads": 2}, details=_details(speed))])
    shown = [row[headers.index("% roofline")] for row in rows]
    assert shown[0].endswith("*") and not shown[1].endswith("*")
    assert "beside" not in roofline_clause(steady) and not any("beside this cell" in x for x in notes([steady]))


def test_a_run_carries_the_probe_reference_of_its_stored_ceilings(cpu_features):
    from enginebench.measure.peak import run_speed

    tried = [{"library": "numpy 2.3 matmul", "gflops": 180.0, "n": 2048, "threads": 2,
              "by_n": {"1024": 150.0, "2048": 180.0}},  # JSON keeps sizes as text
             {"library": "onnxruntime 1.23 MatMul (MLAS)", "gflops": 199.0, "n": 2048, "by_n": {"1024": 199.0}}]
    stored = {"measured_at": "t", "bandwidth_gbs": 20.0, "gemm_gflops": 199.0,
              "details": {"cpu_features": {}, "gemm": {"library": "onnxruntime", "tried": tried}}}
    speed = run_speed(stored)
    if cpu_features.narrowed_to:
        assert "gemm_probe" not in speed
    else:
        assert speed["gemm_probe"] == {"gflops": 150.0, "n": 1024, "threads": 2}
    stored["details"]["gemm"]["tried"] = tried[1:]  # numpy not timed: nothing to probe against
    assert "gemm_probe" not in run_speed(stored)
