"""Machine and library metadata, recorded with every run."""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata

from enginebench.measure import cpu_features

# Distributions whose versions matter to a result; absent ones are simply not listed.
LIBRARIES = (
    "enginebench", "numpy", "tokenizers", "torch", "transformers", "onnx", "onnxruntime", "openvino",
    "jax", "jaxlib", "ctranslate2", "tinygrad", "llama_cpp_python", "gguf",
)
# what changes the kernels a library runs: thread pools, ISA caps (ENGINEBENCH_CPU_FEATURES sets them)
_RECORDED_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "CT2_USE_MKL", "ATEN_CPU_CAPABILITY",
                 cpu_features.ENV, *cpu_features.KERNEL_CAPS)
_INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "fma", "neon", "asimd")


def _cpuinfo() -> dict:
    first, _, cores = cpu_features.parse_cpuinfo(cpu_features.cpuinfo_text())
    flags = cpu_features.cpu_flags()
    return {
        "model": first.get("model name") or first.get("Model") or first.get("cpu model") or platform.processor()
        or "unknown",
        "physical_cores": cores or None,
        "flags": [f for f in _INTERESTING_FLAGS if f in flags],
    }


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        return None
    return None


def _governor() -> str | None:
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            return f.read().strip()
    except OSError:
        return None


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def machine_info() -> dict:
    cpu = _cpuinfo()
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu["model"],
        "cpu_flags": cpu["flags"],
        **({"cpu_features": cpu_features.current().record()} if cpu_features.current().narrowed_to else {}),
        "logical_cores": os.cpu_count(),
        "physical_cores": cpu["physical_cores"],
        "affinity": affinity,
        "memory_gb": _memory_gb(),
        "governor": _governor(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "env": {k: v for k, v in os.environ.items() if k in _RECORDED_ENV},
    }


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,6' -> [0, 1, 2, 3, 6] (taskset's syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        start, end = int(lo), int(hi or lo)
        if start > end or start < 0:
            raise ValueError(part)
        cpus.update(range(start, end + 1))
    if not cpus:
        raise ValueError(text)
    return sorted(cpus)
