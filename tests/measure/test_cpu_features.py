"""The one place CPU-dependent decisions read the CPU (measure/cpu_features.py): ENGINEBENCH_CPU_FEATURES narrows
it to a smaller CPU, the decisions follow, the kernel caps reach the measuring processes, and bad values are
refused in one line. Tests taking the `cpu_features` fixture run on this CPU and acting as an AVX2-only one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from enginebench.engines import REGISTRY, engine_class
from enginebench.errors import UsageError
from enginebench.measure import cpu_features as features
from enginebench.measure import roofline
from enginebench.measure.peak import cpu_peak
from enginebench.search.space import candidates

SAPPHIRE_RAPIDS = {"sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512cd",
                   "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                   "amx_bf16", "amx_int8", "vaes", "gfni"}
ZEN4 = SAPPHIRE_RAPIDS - {"avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
HASWELL = {"sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi2"}


def test_a_narrowed_set_only_takes_away_vector_instructions():
    allowed = features.parse_request("avx2", SAPPHIRE_RAPIDS)
    narrowed = features.narrow(SAPPHIRE_RAPIDS, allowed)
    assert narrowed == HASWELL  # every AVX-512, AMX, VNNI and vector-crypto flag gone; sse4_2, popcnt, bmi2 kept
    assert features.narrow(HASWELL, features.parse_request("avx512-bf16", HASWELL)) == HASWELL  # nothing added
    assert features.parse_request("native", SAPPHIRE_RAPIDS) is None
    with_vnni = features.narrow(SAPPHIRE_RAPIDS, features.parse_request("avx2,avx_vnni", SAPPHIRE_RAPIDS))
    assert with_vnni == HASWELL | {"avx_vnni"}


@pytest.mark.parametrize("value", ["avx3", "avx2,amx_fp8", ","])
def test_a_value_naming_neither_a_set_nor_a_flag_is_refused_with_the_fix(value):
    if value == ",":
        assert features.parse_request(value, SAPPHIRE_RAPIDS) is None  # empty: the whole CPU
        return
    with pytest.raises(UsageError, match=r"ENGINEBENCH_CPU_FEATURES=.*neither a feature set \(avx2, avx512"):
        features.parse_request(value, HASWELL)


@pytest.mark.parametrize("flags,onednn,ct2,xla,openblas", [
    (HASWELL, "AVX2", "AVX2", "AVX2", "Haswell"),
    (HASWELL | {"avx_vnni"}, "AVX2_VNNI", "AVX2", "AVX2", "Haswell"),
    (ZEN4, "AVX512_CORE_BF16", "AVX512", "AVX512_BF16", "Cooperlake"),
    (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", "AVX512", "AVX512_BF16", "SapphireRapids"),
])
def test_kernel_caps_name_the_widest_isa_the_flags_allow(flags, onednn, ct2, xla, openblas):
    caps = features.kernel_caps(flags)
    assert caps["ONEDNN_MAX_CPU_ISA"] == caps["DNNL_MAX_CPU_ISA"] == onednn
    assert caps["CT2_FORCE_CPU_ISA"] == ct2 and caps["OPENBLAS_CORETYPE"] == openblas
    assert caps["XLA_FLAGS"] == f"--xla_cpu_max_isa={xla}"
    assert "ATEN_CPU_CAPABILITY" not in caps  # torch's own kernels see the smaller CPU through the CPUID mask
    # torch.compile's graphs hold weights packed for one ISA: each set compiles into a cache of its own
    assert caps["TORCHINDUCTOR_CACHE_DIR"].endswith("_" + onednn.lower())
    assert set(caps) == set(features.KERNEL_CAPS)  # every cap set is documented with the libraries it reaches


def test_vnni_needs_the_flag_and_an_isa_cap_that_allows_it(cpu_features):
    expected = cpu_features.has_any({"avx512_vnni", "avx_vnni"})
    assert features.vnni_available() is expected  # the flags in use, narrowed or not
    assert features.vnni_available(cap=features.kernel_caps(HASWELL)["ONEDNN_MAX_CPU_ISA"]) is False
    if cpu_features.narrowed_to == "avx2":
        assert expected is False


def test_user_set_caps_are_kept_and_xla_flags_extended(monkeypatch):
    monkeypatch.setenv(features.ENV, "avx2")
    env = {"ONEDNN_MAX_CPU_ISA": "AVX", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    applied = features.apply_kernel_caps(env)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX" and "ONEDNN_MAX_CPU_ISA" not in applied
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX2"
    assert env["CT2_FORCE_CPU_ISA"] == "AVX2"
    monkeypatch.delenv(features.ENV)
    assert features.apply_kernel_caps({}) == {}  # the whole CPU: no cap at all


@pytest.mark.parametrize("engine", sorted(REGISTRY))
def test_every_engine_offers_a_cpu_dependent_precision_only_where_the_features_have_it(engine, cpu_features):
    """Generic over the registry: an engine that gains a CPU-dependent precision is covered unasked."""
    cls = engine_class(engine)
    for precision, needs in cls.cpu_needs.items():
        assert precision in cls.precisions
        reason = cls.why_not_precision(precision)
        if not cpu_features.has_any(needs):
            assert reason and sorted(needs)[0] in reason
        elif cpu_features.narrowed_to is None and cls.installed():
            assert reason is None or "needs" not in reason  # any other reason is the library's own report


def test_tune_and_the_peak_read_the_same_features(cpu_features):
    from enginebench.models import resolve_model

    model = resolve_model("minilm")
    space = candidates(["openvino"], model, "latency", [1], cores=2)
    has_bf16 = cpu_features.has_any(engine_class("openvino").cpu_needs["bf16"])
    if not has_bf16:
        assert "bf16" not in {c.precision for c in space}
    peak = cpu_peak()
    avx512 = cpu_features.has_any({"avx512f"})
    assert peak.instructions["fp32"].startswith("AVX-512") is avx512
    assert peak.instructions["bf16"].startswith("none for bf16") is not has_bf16
    bf16_gemm = roofline.best_gemm("bf16", [{"library": "torch", "gflops": 1.0}], features.cpu_flags())
    assert bf16_gemm["native"] is has_bf16


def test_a_narrowed_cpu_is_recorded_and_reaches_the_measuring_process(monkeypatch):
    from enginebench.measure.machine import machine_info

    monkeypatch.setenv(features.ENV, "avx2")
    for key in features.KERNEL_CAPS:
        monkeypatch.delenv(key, raising=False)
    info = machine_info()
    assert info["cpu_features"]["narrowed_to"] == "avx2"
    assert not {"avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"} & set(info["cpu_flags"])
    # a measuring process sets its libraries' environment through child.limit_threads before loading one
    probe = ("import json, os; from enginebench.measuring_process import limit_threads; limit_threads(1); "
             "print(json.dumps({k: os.environ.get(k) for k in %r}))" % (tuple(features.KERNEL_CAPS),))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items()})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["ONEDNN_MAX_CPU_ISA"] == "AVX2" and seen["CT2_FORCE_CPU_ISA"] == "AVX2"
    assert seen["OPENBLAS_CORETYPE"] == "Haswell" and seen["XLA_FLAGS"].endswith("--xla_cpu_max_isa=AVX2")


def test_numpys_blas_runs_capped_in_a_process_started_with_the_caps(monkeypatch):
    """The launcher sets the caps in its own environment before it starts a measuring process (a library reads
    them when it loads): OpenBLAS then reports the kernels it picked, Haswell's (AVX2)."""
    monkeypatch.setenv(features.ENV, "avx2")
    env = {k: v for k, v in os.environ.items() if k not in features.KERNEL_CAPS}
    features.apply_kernel_caps(env)
    probe = "import numpy as np; np.show_runtime()"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    if "'architecture'" not in done.stdout:
        pytest.skip("this numpy does not report its BLAS kernels (threadpoolctl absent)")
    assert "'architecture': 'Haswell'" in done.stdout


def test_the_cli_refuses_a_bad_value_in_one_line_before_anything_runs(tmp_path):
    db = tmp_path / "never.db"
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--quick", "--db", str(db)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, features.ENV: "avx3"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "ENGINEBENCH_CPU_FEATURES=avx3" in lines[0]
    assert not db.exists()


def test_machine_says_what_a_narrowed_set_cannot_reach(monkeypatch):
    from enginebench.cli.system import cpu_features_lines

    monkeypatch.delenv(features.ENV, raising=False)
    assert cpu_features_lines(features.current()) == []  # the whole CPU: nothing to say
    monkeypatch.setenv(features.ENV, "avx2")
    lines = cpu_features_lines(features.current())
    assert lines[0].startswith("CPU features: acting as avx2")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in lines[1]
    whole = lines[-1]
    assert whole.startswith("  still on the whole CPU:") and "llamacpp" in whole  # compiled for this CPU: always
    masked = bool(features.current().cpuid_env)  # where CPUID faulting and a compiler are there (cpuid_mask)
    assert any("CPUID masked" in line for line in lines) is masked
    assert all((name in whole) is not masked for name in ("onnxruntime", "openvino", "tinygrad", "torch"))
