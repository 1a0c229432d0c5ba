"""The CPU features that every CPU-dependent decision reads: which precisions an engine offers here, whether an
int8 GEMM has VNNI, whether bf16 is native, the theoretical peak. One place, so that it can act as a smaller CPU.

ENGINEBENCH_CPU_FEATURES asks "what would this machine offer without AVX-512?". It takes a feature set
(FEATURE_SETS: avx2, avx512, avx512-vnni, avx512-bf16, amx) and/or flags of this CPU, comma-separated
(`avx2,avx_vnni`), and only takes away: a flag this CPU lacks stays absent. Every vector-ISA flag outside the
set is dropped; the other flags (sse4_2, popcnt, ...) stay.

Two things follow a narrowed set:
- enginebench's own decisions (precisions offered, VNNI, native bf16/int8, the theoretical peak) read the
  narrowed flags;
- the kernels follow where a library can be capped from the environment (KERNEL_CAPS: oneDNN in torch and
  CTranslate2, CTranslate2's own kernels, XLA, OpenBLAS), which enginebench sets for every measuring
  process it starts. The caps are read when a library first loads, so they reach processes started after
  they are set, not a library already imported;
- the libraries that read CPUID themselves (ONNX Runtime's MLAS, OpenVINO's CPU plugin, torch's vector kernels,
  tinygrad's clang -march=native) follow where the CPUID mask runs (measure/cpuid_mask.py: Linux's CPUID
  faulting, a preloaded library); without it (UNCAPPED) they run on the whole CPU. llama.cpp, compiled for
  this CPU, always does. `enginebench machine` says which, and results record the narrowed flags, the caps
  and whether the mask answered.
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

from enginebench.errors import UsageError
from enginebench.measure import cpuid_mask

ENV = "ENGINEBENCH_CPU_FEATURES"

# x86-64 psABI levels and the AVX-512 generations after them, each a superset of the one before
_AVX2 = frozenset({"avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe", "abm", "xsave"})
_AVX512 = _AVX2 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
_AVX512_VNNI = _AVX512 | {"avx512_vnni"}
_AVX512_BF16 = _AVX512_VNNI | {"avx512_bf16"}
_AMX = _AVX512_BF16 | {"avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}
FEATURE_SETS: dict[str, frozenset[str]] = {
    "avx2": _AVX2, "avx512": _AVX512, "avx512-vnni": _AVX512_VNNI, "avx512-bf16": _AVX512_BF16, "amx": _AMX,
}
# flags that are not vector instructions: kept whatever the set (they change no decision of ours)
_SCALAR_EXTENSIONS = {"bmi1", "bmi2", "movbe", "abm", "xsave"}


def _is_vector_isa(flag: str) -> bool:
    return flag.startswith(("avx", "amx")) or flag in {"fma", "f16c", "vaes", "vpclmulqdq", "gfni"}


def cpuinfo_text() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[dict, set[str], int]:
    """/proc/cpuinfo's text -> the first processor's fields, its flags (`Features` on ARM), and the physical
    cores listed ((physical id, core id) pairs; 0 where it lists none)."""
    first: dict = {}
    cores = set()
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if not fields.get("processor"):
            continue
        first = first or fields
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return first, set((first.get("flags") or first.get("Features") or "").split()), len(cores)


def parse_request(text: str, real: set[str]) -> frozenset[str] | None:
    """ENGINEBENCH_CPU_FEATURES's value -> the vector-ISA flags allowed (None: the whole CPU), or UsageError."""
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    if not tokens or tokens == ["native"]:
        return None
    allowed: set[str] = set()
    for token in tokens:
        if token in FEATURE_SETS:
            allowed |= FEATURE_SETS[token]
        elif token in real:
            allowed.add(token)
        else:
            raise UsageError(f"{ENV}={text}: {token!r} is neither a feature set ({', '.join(FEATURE_SETS)}) nor a "
                             f"flag of this CPU: write e.g. {ENV}=avx2")
    return frozenset(allowed)


def narrow(real: set[str], allowed: frozenset[str] | None) -> set[str]:
    if allowed is None:
        return set(real)
    return {f for f in real if not _is_vector_isa(f) or f in allowed or f in _SCALAR_EXTENSIONS}


def _onednn_isa(flags: set[str]) -> str:
    """oneDNN's ONEDNN_MAX_CPU_ISA for these flags (its names: the widest ISA it may use)."""
    avx512_core = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    if avx512_core and {"amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni"} <= flags:
        return "AVX512_CORE_AMX"
    if avx512_core and {"avx512_bf16", "avx512_vnni"} <= flags:
        return "AVX512_CORE_BF16"
    if avx512_core and "avx512_vnni" in flags:
        return "AVX512_CORE_VNNI"
    if avx512_core:
        return "AVX512_CORE"
    if {"avx2", "avx_vnni"} <= flags:
        return "AVX2_VNNI"
    return "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else "SSE41"


def kernel_caps(flags: set[str]) -> dict[str, str]:
    """Environment variables that cap the libraries' kernels at these flags."""
    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags
    onednn = _onednn_isa(flags)
    ct2 = "AVX512" if avx512 else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else "GENERIC"
    xla = ("AVX512_BF16" if avx512 and "avx512_bf16" in flags else "AVX512_VNNI" if avx512 and "avx512_vnni" in flags
           else "AVX512" if avx512 else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags else "SSE4_2")
    openblas = ("SapphireRapids" if onednn == "AVX512_CORE_AMX" else "Cooperlake" if onednn == "AVX512_CORE_BF16"
                else "SkylakeX" if avx512 else "Haswell" if "avx2" in flags else "Sandybridge")
    return {"ONEDNN_MAX_CPU_ISA": onednn, "DNNL_MAX_CPU_ISA": onednn, "CT2_FORCE_CPU_ISA": ct2,
            "XLA_FLAGS": f"--xla_cpu_max_isa={xla}", "OPENBLAS_CORETYPE": openblas,
            "TORCHINDUCTOR_CACHE_DIR": _inductor_cache(onednn)}


def _inductor_cache(isa: str) -> str:
    """torch.compile's cache for one oneDNN ISA, beside its default /tmp/torchinductor_USER."""
    try:
        user = getpass.getuser()  # as torch names its own
    except (KeyError, OSError):
        user = str(os.getuid())
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}_{isa.lower()}")


# which libraries each cap reaches, and those no environment variable caps
KERNEL_CAPS = {
    "ONEDNN_MAX_CPU_ISA": "oneDNN (torch's mkldnn and inductor kernels, CTranslate2's int8 GEMMs)",
    "DNNL_MAX_CPU_ISA": "oneDNN before 2.x",
    "CT2_FORCE_CPU_ISA": "CTranslate2's own kernels",
    "XLA_FLAGS": "XLA's CPU code generation (jax)",
    "OPENBLAS_CORETYPE": "OpenBLAS's kernels (numpy's matmul)",
    # inductor's cache key misses the ISA oneDNN packed the weights for: a MiniLM compiled on the whole CPU and
    # found in the cache under the AVX2 cap returned garbage (min cosine -0.097, 2026-12-07)
    "TORCHINDUCTOR_CACHE_DIR": "torch.compile's compiled graphs, kept apart per ISA",
}
# the libraries no environment variable caps; those but llama.cpp follow the CPUID mask where it runs
UNCAPPED = {
    "onnxruntime": "MLAS picks its kernels from the CPU at start-up",
    "openvino": "its CPU plugin reads the CPU itself: ONEDNN_MAX_CPU_ISA reaches only part of it (seen: FP16 left "
                "its OPTIMIZATION_CAPABILITIES, BF16 stayed)",
    "llamacpp": "llama.cpp is compiled for this machine's CPU (-march=native)",
    "tinygrad": "tinygrad compiles its kernels with clang -march=native",
    "torch": "its vectorised ATen and torch.compile kernels read the CPU themselves (only its oneDNN takes a cap)",
}
COMPILED_FOR_THIS_CPU = ("llamacpp",)  # its instructions are in the binary: no CPUID answer changes them


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]  # what decisions read: the CPU's flags, narrowed where asked
    real: frozenset[str]  # the CPU's own
    narrowed_to: str | None = None  # ENGINEBENCH_CPU_FEATURES's value, or None for the whole CPU
    caps: dict = field(default_factory=dict)  # kernel caps that follow the narrowed set (empty: none)
    # what the measuring processes start with so that CPUID answers the narrowed set (empty: not masked)
    cpuid_env: dict = field(default_factory=dict)
    cpuid_unavailable: str | None = None  # why the CPUID mask cannot run here, where it would be needed

    @property
    def seen_by_libraries(self) -> frozenset[str]:
        """The flags that libraries reading CPUID themselves (MLAS, OpenVINO's plugin) see in the measuring
        processes: the narrowed ones where the CPUID mask runs, else the whole CPU's."""
        return self.flags if self.cpuid_env else self.real

    def uncapped(self) -> dict[str, str]:
        """The libraries that still run on the whole CPU under this set, and why."""
        if not self.narrowed_to:
            return {}
        if self.cpuid_env:
            return {name: UNCAPPED[name] for name in COMPILED_FOR_THIS_CPU}
        return {name: f"{why}; no CPUID mask: {self.cpuid_unavailable}" for name, why in UNCAPPED.items()}

    def has_any(self, flags) -> bool:
        return bool(self.flags & set(flags))

    def missing(self, any_of, what: str) -> str | None:
        """Why `what` is not offered when the CPU has none of `any_of`, or None when it has one."""
        if self.has_any(any_of):
            return None
        names = " or ".join(sorted(any_of))
        if self.narrowed_to and set(any_of) & self.real:
            return f"{what} needs {names}, left out by {ENV}={self.narrowed_to}"
        return f"{what} needs {names}, which this CPU does not have"

    def describe(self) -> str:
        if not self.narrowed_to:
            return "the whole CPU"
        dropped = sorted(f for f in self.real - self.flags if _is_vector_isa(f))
        return (f"acting as {self.narrowed_to} ({ENV}): {len(dropped)} flags left out"
                + (f" ({', '.join(dropped[:6])}{', …' if len(dropped) > 6 else ''})" if dropped else ""))

    def record(self) -> dict:
        """What a result keeps of this: the narrowed set and the caps that applied."""
        if not self.narrowed_to:
            return {}
        return {"narrowed_to": self.narrowed_to, "kernel_caps": dict(self.caps), "cpuid_masked": self.masked_here}

    @property
    def masked_here(self) -> bool:
        """Whether this process's CPUID answers are masked to the narrowed set: what it measures itself runs the
        smaller CPU's kernels in every library but those compiled for this CPU."""
        return bool(self.narrowed_to) and cpuid_mask.active()


@lru_cache(maxsize=8)
def _features(request: str, real: frozenset[str]) -> CpuFeatures:
    allowed = parse_request(request, set(real))
    if allowed is None:
        return CpuFeatures(real, real)
    flags = frozenset(narrow(set(real), allowed))
    mask_env, unavailable = cpuid_mask.environment(real, flags)
    return CpuFeatures(flags, real, request, kernel_caps(set(flags)), mask_env, unavailable)


def current() -> CpuFeatures:
    """This process's CPU features, narrowed by ENGINEBENCH_CPU_FEATURES (read at each call, so a test or a
    launcher that sets it is followed); UsageError for a value that names neither a set nor a flag."""
    return _features(os.environ.get(ENV, "").strip(), frozenset(_real_flags()))


@lru_cache(maxsize=1)
def _real_flags() -> frozenset[str]:
    return frozenset(parse_cpuinfo(cpuinfo_text())[1])


def cpu_flags() -> set[str]:
    """The flags decisions read (narrowed where asked)."""
    return set(current().flags)


# oneDNN ISA caps that exclude every VNNI instruction (AVX2_VNNI and AVX512_CORE_VNNI and above include it)
_CAPS_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX512_CORE"}


def onednn_isa_cap() -> str | None:
    """The oneDNN ISA cap this process runs under (ONEDNN_MAX_CPU_ISA, DNNL_MAX_CPU_ISA in older releases)."""
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(var):
            return os.environ[var].strip().upper()
    return None


def vnni_available(flags: set[str] | None = None, cap: str | None = None) -> bool:
    """VNNI instructions that oneDNN may use here: the CPU (narrowed where asked) has them and no ISA cap rules
    them out. For a library that reads the CPU itself, pass `current().real`."""
    flags = cpu_flags() if flags is None else flags
    if not ({"avx512_vnni", "avx_vnni"} & flags):
        return False
    return cap is None or cap not in _CAPS_WITHOUT_VNNI


def apply_kernel_caps(environ=None) -> dict[str, str]:
    """Set the kernel caps of a narrowed set, and the CPUID mask where it runs, in `environ` (os.environ by
    default) for the processes started after it; a cap the user set already is kept, XLA_FLAGS and LD_PRELOAD
    are extended. Returns what was set."""
    environ = os.environ if environ is None else environ
    applied = {}
    features = current()
    for key, value in {**features.caps, **features.cpuid_env}.items():
        if key == cpuid_mask.PRELOAD_ENV:
            applied[key] = cpuid_mask.preload_with(value, environ.get(key, ""))
        elif key == cpuid_mask.RULES_ENV:
            applied[key] = value  # the set asked now, whatever a parent process asked
        elif key == "XLA_FLAGS":
            present = environ.get(key, "")
            if "--xla_cpu_max_isa" not in present:
                applied[key] = f"{present} {value}".strip()
        elif not environ.get(key):
            applied[key] = value
    environ.update(applied)
    return applied


# every variable apply_kernel_caps may set
ENV_KEYS = (*kernel_caps(set()), cpuid_mask.PRELOAD_ENV, cpuid_mask.RULES_ENV)
_REEXEC_GUARD = "ENGINEBENCH_CPUID_REEXEC"


def reexec_masked(before_exec=None) -> None:
    """Start this program again under the CPUID mask when the narrowed set has one and this process runs
    without it, so that what it measures itself (`enginebench machine`, the test process) runs the smaller
    CPU's kernels too. Call before any library that reads CPUID is imported; `before_exec` runs just before
    (pytest's capture must give the terminal back). A process whose mask did not start runs on as it is."""
    features = current()
    if not features.cpuid_env or cpuid_mask.active() or os.environ.get(_REEXEC_GUARD) == str(os.getpid()):
        return
    apply_kernel_caps()
    os.environ[_REEXEC_GUARD] = str(os.getpid())  # execv keeps the pid: a second try of this process stops here
    if before_exec:
        before_exec()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def usable_cpus() -> int:
    """The logical CPUs this process may run on (its affinity), which every thread default starts from."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["usable_cpus", "ENV", "ENV_KEYS", "reexec_masked", "FEATURE_SETS", "KERNEL_CAPS", "UNCAPPED", "CpuFeatures", "current", "cpu_flags",
           "kernel_caps", "apply_kernel_caps", "parse_cpuinfo", "cpuinfo_text", "onednn_isa_cap", "vnni_available", "parse_request", "narrow"]
