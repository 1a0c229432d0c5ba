"""Acting as a smaller CPU for the libraries that read the CPU themselves.

The kernel caps of cpu_features reach the libraries that take one from the environment (oneDNN, CTranslate2,
XLA, OpenBLAS). ONNX Runtime's MLAS, OpenVINO's plugin, torch's vector kernels and clang's -march=native
(tinygrad) read CPUID themselves. Where Linux offers CPUID faulting (the `cpuid_fault` flag), a small library
preloaded into every measuring process (cpuid_mask.c) answers their CPUID with the bits of the left-out
features cleared, so they pick the smaller CPU's kernels. What is compiled already for this CPU
(llama.cpp's -march=native build) still runs its own instructions.

The library is compiled once with the system's C compiler into the artifact cache. Without CPUID faulting or a
compiler, `why_unavailable` says so and the process runs as before: capped where a cap reaches, whole elsewhere.
"""

from __future__ import annotations

import ctypes
import os
import platform
from functools import lru_cache
from pathlib import Path

from enginebench.measure import native

RULES_ENV = "ENGINEBENCH_CPUID_CLEAR"
PRELOAD_ENV = "LD_PRELOAD"
SOURCE = Path(__file__).with_name("cpuid_mask.c")

# Linux's flag name -> the CPUID bits that announce it: (leaf, subleaf, register, bit)
FLAG_BITS: dict[str, tuple[tuple[int, int, str, int], ...]] = {
    "fma": ((1, 0, "ecx", 12),),
    "avx": ((1, 0, "ecx", 28),),
    "f16c": ((1, 0, "ecx", 29),),
    "avx2": ((7, 0, "ebx", 5),),
    # AVX10 (leaf 7.1 edx bit 19) announces AVX-512 on the CPUs that have it
    "avx512f": ((7, 0, "ebx", 16), (7, 1, "edx", 19)),
    "avx512dq": ((7, 0, "ebx", 17),),
    "avx512ifma": ((7, 0, "ebx", 21),),
    "avx512pf": ((7, 0, "ebx", 26),),
    "avx512er": ((7, 0, "ebx", 27),),
    "avx512cd": ((7, 0, "ebx", 28),),
    "avx512bw": ((7, 0, "ebx", 30),),
    "avx512vl": ((7, 0, "ebx", 31),),
    "avx512vbmi": ((7, 0, "ecx", 1),),
    "avx512_vbmi2": ((7, 0, "ecx", 6),),
    "gfni": ((7, 0, "ecx", 8),),
    "vaes": ((7, 0, "ecx", 9),),
    "vpclmulqdq": ((7, 0, "ecx", 10),),
    "avx512_vnni": ((7, 0, "ecx", 11),),
    "avx512_bitalg": ((7, 0, "ecx", 12),),
    "avx512_vpopcntdq": ((7, 0, "ecx", 14),),
    "avx512_4vnniw": ((7, 0, "edx", 2),),
    "avx512_4fmaps": ((7, 0, "edx", 3),),
    "avx512_vp2intersect": ((7, 0, "edx", 8),),
    "amx_bf16": ((7, 0, "edx", 22),),
    "avx512_fp16": ((7, 0, "edx", 23),),
    "amx_tile": ((7, 0, "edx", 24),),
    "amx_int8": ((7, 0, "edx", 25),),
    "avx_vnni": ((7, 1, "eax", 4),),
    "avx512_bf16": ((7, 1, "eax", 5),),
    "amx_fp16": ((7, 1, "eax", 21),),
    "avx_ifma": ((7, 1, "eax", 23),),
    "avx_vnni_int8": ((7, 1, "edx", 4),),
    "avx_ne_convert": ((7, 1, "edx", 5),),
    "amx_complex": ((7, 1, "edx", 8),),
    "avx_vnni_int16": ((7, 1, "edx", 10),),
}


def rules(dropped) -> str:
    """The flags to hide -> ENGINEBENCH_CPUID_CLEAR's value ("7.0.ebx=d0230000,..."), one mask per register."""
    masks: dict[tuple[int, int, str], int] = {}
    for flag in dropped:
        for leaf, subleaf, register, bit in FLAG_BITS.get(flag, ()):
            masks[leaf, subleaf, register] = masks.get((leaf, subleaf, register), 0) | 1 << bit
    return ",".join(f"{leaf:x}.{subleaf:x}.{register}={mask:x}" for (leaf, subleaf, register), mask in sorted(masks.items()))


def why_unavailable(real_flags) -> str | None:
    """Why no process here can be masked (None: they can)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"CPUID faulting is a Linux x86-64 feature, not {platform.system()} {platform.machine()}'s"
    if "cpuid_fault" not in real_flags:
        return "this CPU (or its hypervisor) offers no CPUID faulting (no cpuid_fault flag)"
    if not native.compiler():
        return "no C compiler (cc, gcc or clang) to build the CPUID mask: install gcc"
    return None


@lru_cache(maxsize=1)
def library() -> Path:
    """The compiled mask (measure/native.py: built once per source and compiler into the artifact cache; its name
    starts cpuid_mask-, which _loaded() looks for in a process's maps); RuntimeError if the build fails."""
    return native.shared_library(SOURCE, "cpuid-mask", libraries=("dl",))


def environment(real_flags, flags) -> tuple[dict[str, str], str | None]:
    """What a process must start with to see only `flags` of `real_flags`: ({LD_PRELOAD, rules}, None), or
    ({}, why not). Nothing to hide is ({}, None)."""
    hidden = rules(set(real_flags) - set(flags))
    if not hidden:
        return {}, None
    if why := why_unavailable(real_flags):
        return {}, why
    try:
        path = library()
    except (OSError, RuntimeError) as exc:
        return {}, str(exc)
    return {PRELOAD_ENV: str(path), RULES_ENV: hidden}, None


def preload_with(path: str, present: str) -> str:
    """LD_PRELOAD holding `path` beside what it held (a user's own preloads stay)."""
    entries = present.replace(":", " ").split()
    return " ".join(entries if path in entries else [path, *entries])


@lru_cache(maxsize=1)
def _loaded_path() -> str | None:
    """Where this process has the mask library mapped, or None. A process gets it only at its start
    (LD_PRELOAD), so this is read once."""
    try:
        with open("/proc/self/maps") as maps:
            return next((line.split(None, 5)[-1].strip() for line in maps if "cpuid_mask-" in line), None)
    except OSError:
        return None


def _loaded() -> ctypes.CDLL | None:
    """The mask library if this process started with it preloaded, else None."""
    path = _loaded_path()
    try:
        return ctypes.CDLL(path, mode=os.RTLD_NOLOAD) if path else None  # the loaded copy, never a second load
    except OSError:
        return None


def active() -> bool:
    """Whether this process's CPUID answers are masked (it started with the library and faulting worked)."""
    lib = _loaded()
    return bool(lib and lib.enginebench_cpuid_mask_active())


def answered() -> int:
    """How many CPUID instructions this process had answered by the mask (0 when unmasked)."""
    lib = _loaded()
    if not lib:
        return 0
    lib.enginebench_cpuid_mask_faults.restype = ctypes.c_ulong
    return int(lib.enginebench_cpuid_mask_faults())


__all__ = ["FLAG_BITS", "RULES_ENV", "PRELOAD_ENV", "rules", "why_unavailable", "library", "environment",
           "preload_with", "active", "answered"]
