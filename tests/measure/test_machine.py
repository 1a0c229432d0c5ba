"""`enginebench machine`: bandwidth and GEMM figures, their storage, and the decode roofline."""

from __future__ import annotations

import functools
import importlib.util
import json
import socket

import pytest

from enginebench.cli import main
from enginebench.measure import roofline
from enginebench.store.database import ResultStore
from enginebench.store.model import SCHEMA_VERSION, Result


def test_bandwidth_and_gemm_are_positive():
    bw = roofline.memory_bandwidth(elements=1 << 20, runs=2, threads=2)
    assert bw["bandwidth_gbs"] > 0 and bw["threads"] == 2 and bw["bytes_per_run"] == 24 << 20
    mm = roofline.gemm_flops(n=128, runs=2)
    assert mm["gemm_gflops"] > 0 and len(mm["runs_s"]) == 2 and mm["n"] in (64, 128)
    # by_n holds each size's GFLOP/s to 0.1: the figure is the best of them (at 42.25 a relative 1e-3 failed)
    assert set(mm["by_n"]) == {64, 128} and max(mm["by_n"].values()) == round(mm["gemm_gflops"], 1)
    timed = [t for t in mm["tried"] if "gflops" in t]
    assert timed[0]["library"].startswith("numpy")  # numpy is always there
    assert mm["gemm_gflops"] == max(t["gflops"] for t in timed) and mm["library"] in [t["library"] for t in timed]


def test_a_pass_in_a_slow_moment_does_not_lower_the_ceiling():
    """Three passes of one precision, the second in a slow moment of the host: each library keeps its best
    figure at each size, the ceiling is the fastest, and every pass's figure is kept beside it."""
    def figure(numpy_by_n, torch_by_n):
        tried = [{"library": "numpy 2 matmul", "gflops": max(numpy_by_n.values()), "threads": 2, "n": 64,
                  "by_n": numpy_by_n, "runs_s": [0.1]},
                 {"library": "torch 2 matmul", "gflops": max(torch_by_n.values()), "threads": 2, "n": 128,
                  "by_n": torch_by_n, "runs_s": [0.1]},
                 {"library": "onnxruntime", "skipped": "not installed"}]
        return roofline.best_gemm("fp32", tried, flags=set())

    passes = [figure({64: 100.0, 128: 90.0}, {64: 120.0, 128: 140.0}),
              figure({64: 50.0, 128: 45.0}, {64: 60.0, 128: 70.0}),  # the host at half speed
              figure({64: 95.0, 128: 110.0}, {64: 125.0, 128: 130.0})]
    merged = roofline.merge_passes(passes)
    assert merged["gflops"] == 140.0 and merged["library"] == "torch 2 matmul"
    assert merged["passes_gflops"] == [140.0, 70.0, 130.0]
    by_library = {t["library"]: t for t in merged["tried"]}
    assert by_library["numpy 2 matmul"]["by_n"] == {64: 100.0, 128: 110.0}  # each size's best, across passes
    assert by_library["torch 2 matmul"]["by_n"] == {64: 125.0, 128: 140.0}
    assert by_library["onnxruntime"] == {"library": "onnxruntime", "skipped": "not installed"}
    from enginebench.measure.peak import probe_reference

    assert probe_reference({"gemm": merged}) == {"gflops": 100.0, "n": 64, "threads": 2}
    skipped = {"skipped": "torch is not installed"}
    assert roofline.merge_passes([skipped, skipped]) == skipped


def test_the_ceiling_is_the_fastest_library_and_says_which():
    from enginebench.measure.peak import gemm_source

    tried = [{"library": "numpy 2 matmul", "gflops": 100.0, "threads": 2, "n": 64, "runs_s": [0.1]},
             {"library": "torch", "skipped": "not installed"},
             {"library": "onnxruntime 1 MatMul (MLAS)", "gflops": 141.0, "threads": 2, "n": 64, "runs_s": [0.1]}]
    best = roofline.best_gemm("fp32", tried, flags=set())
    assert best["gflops"] == 141.0 and best["library"].startswith("onnxruntime") and best["tried"] == tried
    assert best["native"] and best["note"] == ""
    source = gemm_source(best)
    assert source.startswith("onnxruntime 1 MatMul (MLAS), 2 threads")
    assert "fastest of numpy 100, onnxruntime 141" in source
    int8 = roofline.best_gemm("int8", tried[:1], flags={"sse2", "avx"})
    assert int8["gflops"] == 100.0 and not int8["native"] and "emulated" in int8["note"]
    assert "fastest of" not in gemm_source(int8)  # one library: nothing to compare
    # AVX2 multiplies bytes itself (vpmaddubsw), without a dot product: native, and said to be without VNNI
    int8 = roofline.best_gemm("int8", tried[:1], flags={"avx", "fma", "avx2"})
    assert int8["native"] and int8["note"].startswith("no VNNI") and "no VNNI" in gemm_source(int8)
    assert roofline.best_gemm("int8", tried[:1], flags={"avx2", "avx512_vnni"})["note"] == ""
    with pytest.raises(roofline.GemmUnavailable, match="torch: not installed"):
        roofline.best_gemm("bf16", [tried[1]], flags=set())


def test_machine_command_stores_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(roofline, "measure_machine",
                        functools.partial(roofline.measure_machine, triad_elements=1 << 20, gemm_n=128, runs=2))
    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))  # its small-size figures stay here
    roofline.keep_machine_speed({"measured_at": "2026-12-01T00:00:00+00:00", "bandwidth_gbs": 1.0})  # older
    db = tmp_path / "m.db"
    assert main(["machine", "--db", str(db), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    with ResultStore(db) as store:
        stored = store.machine_speed()
    # and kept for runs with any other --db: the newest figures replace the older ones
    assert roofline.cached_machine_speed() == printed
    assert stored["bandwidth_gbs"] == printed["bandwidth_gbs"] > 0
    assert stored["gemm_gflops"] == printed["gemm_gflops"] > 0
    fp32 = stored["details"]["gemm"]
    assert stored["details"]["gemm_source"] == fp32["library"]
    # both sizes up to --gemm-n are timed and the figure is the faster one (on a busy host that can be the smaller)
    by_n = {int(n): gflops for n, gflops in fp32["by_n"].items()}  # JSON keeps the sizes as strings
    assert set(by_n) == {64, 128} and by_n[fp32["n"]] == max(by_n.values())
    assert stored["gemm_gflops"] == max(t["gflops"] for t in fp32["tried"] if "gflops" in t)
    expected = {"numpy"} | {m for m in ("torch", "onnxruntime", "openvino") if importlib.util.find_spec(m)}
    assert {t["library"].split()[0] for t in fp32["tried"] if "gflops" in t} == expected
    assert stored["details"]["triad"]["threads"] >= 1
    by_precision = stored["details"]["gemm_by_precision"]
    assert set(by_precision) == {"bf16", "int8"}
    for precision, figure in by_precision.items():  # measured where the libraries are, else said why not
        assert figure.get("gflops", 0) > 0 or figure["skipped"]
        if "gflops" in figure:
            assert stored["details"]["gemm_gflops_by_precision"][precision] == figure["gflops"]
            assert isinstance(figure["native"], bool) and figure["library"]
    assert main(["machine", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "GB/s" in out and "GEMM bf16" in out and "GEMM int8" in out


def test_ops_read_the_stored_ceiling_of_each_precision(tmp_path):
    db = tmp_path / "m.db"
    speed = roofline.measure_machine(triad_elements=1 << 20, gemm_n=64, runs=1)
    speed["details"]["gemm_gflops_by_precision"] = {"bf16": 123.0}
    speed["details"]["gemm_by_precision"] = {"bf16": {"gflops": 123.0, "library": "torch matmul", "threads": 2,
                                                      "native": False, "note": "emulated: no AVX512_BF16"},
                                             "int8": {"skipped": "torch is not installed"}}
    with ResultStore(db) as store:
        store.add_machine_speed(speed)
        ceilings = store.ceilings()
    assert ceilings.gemm("bf16") == 123.0 and ceilings.gemm("int8") is None
    assert "emulated" in ceilings.gemm_sources["bf16"] and "not measured" in ceilings.gemm_sources["int8"]
    assert ceilings.gemm("fp32") == speed["gemm_gflops"]
    assert ceilings.gemm_sources["fp32"].startswith(speed["details"]["gemm_source"])


def test_an_older_record_without_sources_says_numpy(tmp_path, cpu_features):
    """An older record names numpy as its fp32 source; it was measured on the whole CPU, so a process acting as
    a smaller one (ENGINEBENCH_CPU_FEATURES) does not take it as its ceiling."""
    db = tmp_path / "m.db"
    with ResultStore(db) as store:
        store.add_machine_speed({"measured_at": "2025-01-01T00:00:00+00:00", "hostname": socket.gethostname(),
                                 "bandwidth_gbs": 10.0, "gemm_gflops": 100.0,
                                 "details": {"triad": {"threads": 2}, "gemm": {"n": 2048}}})
        ceilings = store.ceilings()
    if cpu_features.narrowed_to:
        assert ceilings is None
        return
    assert ceilings.gemm_sources["fp32"].startswith("numpy float32 matmul (an older record")


def test_int8_gemm_is_exact_and_says_whether_the_cpu_has_vnni():
    if not any(importlib.util.find_spec(m) for m in ("torch", "onnxruntime")):
        pytest.skip("no int8 GEMM installed")
    plain = roofline.int8_gemm(64, 1, flags={"avx2", "fma"})
    assert plain["gflops"] > 0 and plain["native"] and plain["note"].startswith("no VNNI")
    assert plain["gflops"] == max(t["gflops"] for t in plain["tried"] if "gflops" in t)
    assert roofline.int8_gemm(64, 1, flags={"avx512_vnni"})["note"] == ""
    assert "emulated" in roofline.int8_gemm(64, 1, flags={"sse2"})["note"]


_OPENVINO_PRODUCTS = """
import json
from enginebench.measure import roofline
out = {}
for precision in ("fp32", "int8", "bf16"):
    try:
        figure = roofline._openvino_gemm(precision, 128, 2)  # checked against numpy inside (int8: exactly)
        out[precision] = {k: figure[k] for k in ("gflops", "n", "threads", "library")}
    except roofline.GemmUnavailable as e:
        out[precision] = {"refused": str(e)}
out["int8 libraries"] = [t["library"].split()[0] for t in roofline.time_gemms("int8", (64, 128), runs=2)]
print(json.dumps(out))
"""


def test_openvino_times_each_precision_only_where_it_runs_in_it(cpu_features):
    """OpenVINO's products are timed as its engines run a Linear (constant weights: a FullyConnected), and each
    only where the plugin runs it in that precision: it computes bf16 as f32 silently without AVX512_BF16 or
    AMX-BF16, and its plugin reads the whole CPU, so under a narrowed set its bf16 would not be this set's.
    In a process of its own: oneDNN reads its ISA cap once a process, so under `ENGINEBENCH_CPU_FEATURES=avx2
    make test` (this process capped) the whole-CPU case would meet the capped kernels of an earlier test."""
    import os
    import subprocess
    import sys

    pytest.importorskip("openvino")
    done = subprocess.run([sys.executable, "-c", _OPENVINO_PRODUCTS], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for precision in ("fp32", "int8"):  # int8 on VNNI or not: oneDNN's u8s8 kernels exist on every x86 CPU
        figure = out[precision]
        assert figure["gflops"] > 0 and figure["n"] == 128 and figure["threads"] >= 1
        assert figure["library"].startswith("openvino ") and "FullyConnected" in figure["library"]
        # what the runtime graph says the product ran in, and its kernel (e.g. "i8 (brgemm_avx512_i8)")
        assert ({"fp32": ", f32 (", "int8": ", i8 ("}[precision] in figure["library"]
                or precision == "int8" and ", u8 (" in figure["library"])
    if cpu_features.has_any({"avx512_bf16", "amx_bf16"}):
        assert ", bf16 (" in out["bf16"]["library"]
    else:
        assert out["bf16"]["refused"].startswith("openvino bf16 needs")
    assert "openvino" in out["int8 libraries"]


def test_decode_roofline():
    line = roofline.decode_roofline(50.0, 1, params=100_000_000, precision="bf16", details={}, bandwidth_gbs=10.0)
    assert line["weight_bytes"] == 200_000_000 and line["bound_tokens_per_s"] == pytest.approx(50.0)
    assert line["pct_of_bound"] == pytest.approx(100.0)
    engine_said = roofline.decode_roofline(25.0, 2, 100_000_000, "q4_1", {"weight_bytes": 1e8}, 10.0)
    assert engine_said["bound_tokens_per_s"] == pytest.approx(200.0) and engine_said["weight_bytes_from"] == "engine"
    assert roofline.decode_roofline(50.0, 1, 100, "bf16", {}, None) is None


def test_version_1_results_still_read(tmp_path):
    v1 = {"engine": "torch", "model": "minilm", "precision": "fp32", "scenario": "latency", "workload": "corpus",
          "batch_size": 1, "seq_len": 128, "workers": 1, "threads": 2, "status": "skipped", "error": "why"}
    result = Result.from_dict(v1)
    assert result.decode_tokens_per_s is None and result.prefill_tokens_per_s is None
    db = tmp_path / "old.db"
    with ResultStore(db) as store:
        store.conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        store.conn.commit()
    with ResultStore(db) as store:  # an older database opens and is marked current
        assert store.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
