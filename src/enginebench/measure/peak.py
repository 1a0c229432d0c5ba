"""The machine's peaks, two ways: what the CPU could do on paper, and what `enginebench machine` measured.

Theoretical FLOP/s = FLOPs per cycle per core (from the widest vector instructions in the CPU's flags) ×
physical cores used × maximum clock. FLOPs per cycle assume two full-width FMA units per core, as on Intel
cores since Haswell, server Xeons with AVX-512 and AMD Zen 2/3/5. AMD Zen 4 (family 0x19 with avx512f) runs
AVX-512 on 256-bit datapaths, a 512-bit FMA taking both halves: one 512-bit FMA a cycle (32 fp32 FLOPs), and
its instructions say so. Xeons with a single 512-bit FMA unit (some Silver/Bronze parts) are not told apart
from their flags: their AVX-512 figure is twice what they can do. bf16 and int8 use their dot-product
instructions (AVX512_BF16, AVX-VNNI / AVX512_VNNI, AMX) when the flags list them; int8 without VNNI its byte-pair
products (AVX2 or AVX-512 vpmaddubsw, then vpmaddwd: twice the fp32 rate); else the fp32 figure stands.
The clock is cpufreq's cpuinfo_max_freq; without cpufreq (many VMs), the faster of the clock measured on a chain
of dependent adds (measure/clock.py) and /proc/cpuinfo's "cpu MHz" (said so: it may be the base clock); without
any, the peak is unknown.

Measured ceilings: the newest `enginebench machine` figures of this host in the database (STREAM triad GB/s,
GEMM GFLOP/s per precision, int8 in GOP/s: each the fastest of numpy, torch, onnxruntime and openvino, the one
that gave it recorded), or a short measurement on the spot when there are none.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from enginebench.measure.clock import measured_clock_ghz
from enginebench.measure.cpu_features import cpu_flags, cpuinfo_text, parse_cpuinfo, usable_cpus
from enginebench.measure.cpu_features import current as current_cpu

FMA_UNITS = 2
# flags -> (FLOPs per cycle per core, the instructions that give them), widest first
_FP32 = (("avx512f", 16 * 2 * FMA_UNITS, "AVX-512 FMA"), ("fma", 8 * 2 * FMA_UNITS, "AVX2 FMA"),
         ("avx", 16, "AVX (separate multiply and add)"), ("asimd", 4 * 2 * FMA_UNITS, "NEON FMA"),
         ("sse2", 8, "SSE2"))
_BF16 = (("amx_bf16", 2048, "AMX-BF16"), ("avx512_bf16", 2 * 16 * 2 * FMA_UNITS, "AVX512_BF16 dot products"))
# Without VNNI an int8 dot product is a byte-pair multiply-add into int16 (vpmaddubsw) and a widening add into
# int32 (vpmaddwd), both on the multiply units: one byte pair instruction a cycle per unit pair, twice fp32's rate
_INT8 = (("amx_int8", 4096, "AMX-INT8"), ("avx512_vnni", 4 * 16 * 2 * FMA_UNITS, "AVX512_VNNI"),
         ("avx_vnni", 4 * 8 * 2 * FMA_UNITS, "AVX-VNNI"),
         ("avx512bw", 2 * 16 * 2 * FMA_UNITS, "AVX-512 byte pairs (vpmaddubsw + vpmaddwd, no VNNI)"),
         ("avx2", 2 * 8 * 2 * FMA_UNITS, "AVX2 byte pairs (vpmaddubsw + vpmaddwd, no VNNI)"))
_AVX512_FLAGS = {"avx512f", "avx512_bf16", "avx512_vnni", "avx512bw"}  # the 512-bit rows Zen 4 runs at half rate
ZEN4_NOTE = "AMD Zen 4: 512-bit ops on 256-bit datapaths, one 512-bit FMA a cycle"


# precision -> (flags of instructions that compute it natively, what a figure without them is); int8 is native
# from AVX2's byte-pair products on (vpmaddubsw: MLAS ran them at 1.9x the fp32 GEMM on an AVX2-only EPYC), and
# NO_DOT_PRODUCT says where it has them but no dot-product instruction
NATIVE_FLAGS = {"bf16": ({"avx512_bf16", "amx_bf16"}, "emulated: the CPU has neither AVX512_BF16 nor AMX-BF16"),
                "int8": ({"avx512_vnni", "avx_vnni", "amx_int8", "avx512bw", "avx2"},
                         "emulated: the CPU has no int8 multiply-add instructions (AVX2, AVX-512 or VNNI)")}
NO_DOT_PRODUCT = {"int8": ({"avx512_vnni", "avx_vnni", "amx_int8"},
                           "no VNNI: byte-pair products with int16 sums (vpmaddubsw)")}


def gemm_native(precision: str, flags: set) -> tuple[bool, str]:
    """(whether a CPU with these flags computes the precision's GEMM with instructions of its own, a note: why it is
    emulated, or that int8 has no dot products; "" for neither)."""
    needs, emulated = NATIVE_FLAGS.get(precision, (None, ""))
    if needs is not None and not flags & needs:
        return False, emulated
    dots, without = NO_DOT_PRODUCT.get(precision, (None, ""))
    return True, without if dots is not None and not flags & dots else ""


@dataclass(frozen=True)
class CpuPeak:
    model: str
    physical_cores: int  # usable by this process
    clock_ghz: float | None
    clock_source: str
    flops_per_cycle: dict  # precision -> FLOPs per cycle per core
    instructions: dict  # precision -> what gives that rate

    def gflops(self, precision: str, threads: int) -> float | None:
        """Theoretical GFLOP/s with `threads` threads (one per physical core at most: SMT siblings share the FMA
        units), or None when the clock is unknown."""
        per_cycle = self.flops_per_cycle.get(precision, self.flops_per_cycle.get("fp32"))
        if self.clock_ghz is None or not per_cycle:
            return None
        return per_cycle * min(threads, self.physical_cores) * self.clock_ghz

    def to_dict(self) -> dict:
        return asdict(self)


def _pick(table, flags: set, zen4: bool = False) -> tuple[int, str] | None:
    for flag, rate, name in table:
        if flag in flags:
            return (rate // 2, f"{name} ({ZEN4_NOTE})") if zen4 and flag in _AVX512_FLAGS else (rate, name)
    return None


def is_zen4(fields: dict, flags: set) -> bool:
    """AMD family 0x19 (Zen 3 and Zen 4; only Zen 4 has AVX-512)."""
    return fields.get("vendor_id") == "AuthenticAMD" and fields.get("cpu family") == "25" and "avx512f" in flags


def parse_peak(cpuinfo: str, max_freq_khz: str | None, usable_cpus: int, flags: set | None = None,
               measured_clock: tuple[float | None, str] | None = None) -> CpuPeak:
    """The theoretical peak from /proc/cpuinfo's text and cpufreq's cpuinfo_max_freq (kHz), for a process
    allowed `usable_cpus` logical CPUs; `flags` replace the text's (a narrowed set, see cpu_features);
    `measured_clock` (GHz, how: measure/clock.py) stands in for cpufreq where it is faster than "cpu MHz"."""
    first, listed_flags, listed_cores = parse_cpuinfo(cpuinfo)
    flags = listed_flags if flags is None else flags
    siblings, per_package = first.get("siblings"), first.get("cpu cores")
    smt = int(siblings) // int(per_package) if siblings and per_package and int(per_package) else 1
    physical = max(1, usable_cpus // max(1, smt))
    if listed_cores:
        physical = min(physical, listed_cores)
    clock, source = None, "unknown (no cpufreq and no 'cpu MHz' in /proc/cpuinfo)"
    cpufreq = bool(max_freq_khz and max_freq_khz.strip().isdigit())
    if cpufreq:
        clock, source = int(max_freq_khz) / 1e6, "cpufreq cpuinfo_max_freq"
    elif first.get("cpu MHz"):
        try:
            clock = float(first["cpu MHz"]) / 1e3
            source = "/proc/cpuinfo 'cpu MHz' (no cpufreq: may be below the boost clock)"
        except ValueError:
            pass
    measured, how = measured_clock or (None, "")
    if measured and not cpufreq and (clock is None or measured > clock):
        base = f", /proc/cpuinfo 'cpu MHz' {clock:.2f} GHz" if clock else ""
        clock, source = measured, f"{how}; no cpufreq{base}"
    rates, names = {}, {}
    zen4 = is_zen4(first, flags)
    fp32 = _pick(_FP32, flags, zen4)
    if fp32:
        rates["fp32"], names["fp32"] = fp32
        for precision, table in (("bf16", _BF16), ("int8", _INT8)):
            rates[precision], names[precision] = (_pick(table, flags, zen4)
                                                  or (fp32[0], f"none for {precision}: {fp32[1]}"))
    model = first.get("model name") or first.get("Model") or first.get("cpu model") or "unknown"
    return CpuPeak(model, physical, clock, source, rates, names)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def cpu_peak() -> CpuPeak:
    """This machine's theoretical peak; its clock measured (measure/clock.py) where cpufreq does not give it."""
    max_freq = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    return parse_peak(cpuinfo_text(), max_freq, usable_cpus(), cpu_flags(),
                      None if max_freq else measured_clock_ghz())


@dataclass(frozen=True)
class Ceilings:
    """The measured roofline: GEMM GFLOP/s (fp32) and memory bandwidth GB/s."""

    gemm_gflops: float  # fp32: the fastest library's
    bandwidth_gbs: float
    source: str
    threads: int | None  # threads the triad used
    gemm_by_precision: dict = field(default_factory=dict)  # GEMM GFLOP/s (int8: GOP/s) in other precisions, if any
    gemm_sources: dict = field(default_factory=dict)  # precision -> which library gave it (threads, emulated, skipped)

    def gemm(self, precision: str) -> float | None:
        """The measured GEMM ceiling of this precision; None where only another precision was measured."""
        return self.gemm_gflops if precision == "fp32" else self.gemm_by_precision.get(precision)

    @property
    def ridge(self) -> float:
        """FLOPs per byte above which an fp32 operator is compute-bound."""
        return self.gemm_gflops / self.bandwidth_gbs

    def ridge_for(self, precision: str) -> float:
        """The ridge under this precision's measured GEMM ceiling (the fp32 one where it was not measured)."""
        return (self.gemm(precision) or self.gemm_gflops) / self.bandwidth_gbs

    def to_dict(self) -> dict:
        return {**asdict(self), "ridge_flops_per_byte": self.ridge}


def same_cpu_features(speed: dict) -> bool:
    """Whether a stored `enginebench machine` row was measured under this process's CPU features
    (ENGINEBENCH_CPU_FEATURES): another set's ceilings are another machine's."""
    stored, here = (speed.get("details") or {}).get("cpu_features", {}), current_cpu()
    # under a narrowed set, with or without the CPUID mask are two machines: MLAS's int8 is VNNI's or AVX2's
    return (stored.get("narrowed_to") == here.narrowed_to
            and bool(stored.get("cpuid_masked")) == here.masked_here)


def measured_here(speed: dict | None) -> bool:
    """A stored measurement that holds for this process: this host, under the same CPU features."""
    return bool(speed) and speed.get("hostname") == socket.gethostname() and same_cpu_features(speed)


def _judged_now(details: dict) -> dict[str, dict]:
    """A stored row's reduced-precision ceilings with whether each is emulated, and its note, derived from this
    process's flags (the row was measured under the same features): a row stored before int8 on AVX2 counted as
    native reads as a new one does."""
    flags, judged = cpu_flags(), {}
    for precision, figure in details.get("gemm_by_precision", {}).items():
        native, note = gemm_native(precision, flags)
        judged[precision] = {**figure, "native": native, "note": note}
    return judged


def stored_ceilings(speed: dict | None, where: str) -> Ceilings | None:
    """The ceilings of a stored `enginebench machine` row of this host (ResultStore.ceilings reads it), or None
    (none stored, or measured under other CPU features: ENGINEBENCH_CPU_FEATURES makes another machine)."""
    if not speed or not same_cpu_features(speed):
        return None
    details = speed.get("details", {})
    fp32 = details.get("gemm", {})
    return Ceilings(speed["gemm_gflops"], speed["bandwidth_gbs"],
                    f"`enginebench machine` of {speed['measured_at']} in {where}", details.get("triad", {}).get("threads"),
                    dict(details.get("gemm_gflops_by_precision", {})),
                    {"fp32": gemm_source(fp32) if "library" in fp32 else "numpy float32 matmul (an older record: "
                     "numpy alone; run `enginebench machine` again for the fastest library's)",
                     **{p: gemm_source(r) for p, r in _judged_now(details).items()}})


def run_speed(speed: dict | None) -> dict | None:
    """What a run's results carry of a stored `enginebench machine` row (details.machine_speed): the decode
    roofline's bandwidth, and the GEMM ceilings per precision (with which were emulated) that the encoders'
    compute roofline divides by, only when measured under this process's CPU features."""
    if not speed:
        return None
    out = {k: speed[k] for k in ("bandwidth_gbs", "gemm_gflops", "measured_at")}
    details = speed.get("details") or {}
    if details.get("others_cores") is not None:  # measured beside other work (measure/host_load.py)
        out["others_cores"] = details["others_cores"]
    if not same_cpu_features(speed):
        out["gemm_unknown"] = "measured under other CPU features (ENGINEBENCH_CPU_FEATURES)"
        return out
    out["gemm_gflops_by_precision"] = {"fp32": speed["gemm_gflops"], **details.get("gemm_gflops_by_precision", {})}
    out["gemm_emulated"] = {p: r["note"] for p, r in _judged_now(details).items()
                            if "gflops" in r and not r["native"]}
    probe = probe_reference(details)
    if probe:
        out["gemm_probe"] = probe
    return out


def probe_reference(details: dict) -> dict | None:
    """What a cell's GEMM probe is compared with, from a stored `enginebench machine` row's details: numpy's
    float32 GEMM at its smaller size, {"gflops", "n", "threads"}; None where numpy was not timed."""
    for tried in (details.get("gemm") or {}).get("tried", ()):
        by_n = tried.get("by_n") or {}
        if tried.get("library", "").startswith("numpy") and by_n:
            n = min(int(k) for k in by_n)  # JSON keeps the sizes as text
            return {"gflops": float(by_n.get(str(n), by_n.get(n))), "n": n, "threads": tried.get("threads")}
    return None


def gemm_source(figure: dict) -> str:
    """How one precision's GEMM ceiling was measured, in a few words (roofline.best_gemm's record): the library
    that gave it, its threads, emulated or not, and the others' figures when several were timed."""
    if "skipped" in figure:
        return f"not measured: {figure['skipped']}"
    others = [t for t in figure.get("tried", ()) if "gflops" in t]
    passes = figure.get("passes_gflops") or []
    stopped = [t for t in figure.get("tried", ()) if t.get("stopped")]
    return ", ".join(x for x in (
        figure.get("library"), f"{figure.get('threads')} threads" if figure.get("threads") else "", figure.get("note"),
        "fastest of " + ", ".join(f"{t['library'].split()[0]} {t['gflops']:.0f}" for t in others)
        if len(others) > 1 else "",
        "; ".join(f"{t['library'].split()[0]} timed at n={t['n']}{_in_passes(t, figure)} only (clearly slower)"
                  for t in stopped),
        f"best of {len(passes)} passes ({', '.join(f'{p:.0f}' for p in passes)})" if len(passes) > 1 else "") if x)


def _in_passes(tried: dict, figure: dict) -> str:
    """` in 1 of 3 passes` for a library timed in fewer of `enginebench machine`'s passes than the others."""
    timed, passes = tried.get("timed_in_passes", 1), figure.get("passes", 1)
    return f" in {timed} of {passes} passes" if timed < passes else ""


def roofline_bound(flops: float, nbytes: float, ceilings: Ceilings, precision: str = "fp32") -> str:
    """'compute' when the operator's FLOPs per byte reach the ridge point of its precision, else 'memory'."""
    return "compute" if flops / nbytes >= ceilings.ridge_for(precision) else "memory"


__all__ = ["CpuPeak", "Ceilings", "parse_peak", "cpu_peak", "is_zen4", "gemm_source", "probe_reference", "stored_ceilings",
           "same_cpu_features", "measured_here",
           "run_speed",
           "roofline_bound"]
