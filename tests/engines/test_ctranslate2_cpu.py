"""Reading CTranslate2's int8 path: its system-config log and which oneDNN ISA caps rule VNNI out (no engine needed)."""

from __future__ import annotations

from enginebench.engines.ctranslate2_cpu import parse_system_config
from enginebench.measure.cpu_features import vnni_available

LOG = """\
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info] CPU: AuthenticAMD (SSE4.1=true, AVX=true, AVX2=true, AVX512=true)
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info]  - Selected ISA: AVX2
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info]  - Use Intel MKL: false
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info]  - SGEMM backend: DNNL (packed: false)
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info]  - GEMM_S16 backend: none (packed: false)
[2026-11-25 19:00:43.500] [ctranslate2] [thread 3904] [info]  - GEMM_S8 backend: DNNL (packed: false, u8s8 preferred: true)
"""


def test_system_config_log_is_parsed():
    assert parse_system_config(LOG) == {"cpu_vendor": "AuthenticAMD", "ct2_isa": "AVX2", "fp32_backend": "DNNL",
                                        "int8_backend": "DNNL", "int8_packed": False, "u8s8": True}
    assert parse_system_config("") == {}


def test_vnni_needs_the_cpu_flag_and_a_cap_that_allows_it():
    avx512_vnni = {"avx2", "avx512f", "avx512_vnni"}
    assert vnni_available(avx512_vnni, None)
    assert vnni_available({"avx2", "avx_vnni"}, None)
    assert not vnni_available({"avx2", "fma"}, None)  # an AVX2-only CPU
    for cap in ("AVX2", "AVX512_CORE", "SSE41"):  # measured: AVX512_CORE saturates like AVX2
        assert not vnni_available(avx512_vnni, cap)
    for cap in ("AVX2_VNNI", "AVX512_CORE_VNNI", "AVX512_CORE_BF16", "AVX512_CORE_AMX"):
        assert vnni_available(avx512_vnni, cap)
    assert not vnni_available({"avx2"}, "AVX512_CORE_VNNI")  # a cap cannot add what the CPU lacks
