"""What an operator case's samples mean on this machine: rates and shares of the machine's peaks.

A row's bound comes from the roofline: FLOPs per byte moved against the ridge point of the measured ceilings
(GEMM GFLOP/s of the row's precision ÷ triad GB/s). Compute-bound rows are shares of the FLOP/s peaks
(theoretical for the precision, and the measured GEMM of that precision); memory-bound rows are shares of the
triad bandwidth (Linux does not tell the memory's theoretical bandwidth, so that share is not given). An
operator whose data fits in cache can beat the DRAM ceiling: over 100% there means cache, not a wrong figure.
int8 rows count integer operations (a multiply-add is 2): GOP/s, against the int8 ceilings; their answer must
equal numpy's int64 matmul ("exact").

A stored op result keeps these figures in details["op"] (`op_figures`) and the output check as its fidelity
(`op_fidelity`); formats/tables/ops.py reads them back into rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginebench.measure.peak import Ceilings, CpuPeak, roofline_bound
from enginebench.measure.stats import Summary, summarize
from enginebench.scenarios.ops.case import OpMeasurement
from enginebench.scenarios.ops.definitions import OPERATORS, TOLERANCE

Interval = tuple[float, float] | None
FIDELITY_METRIC = "max rel error vs numpy fp64"
_HELD_BY_RESULT = ("engine", "precision", "status", "unsupported", "error", "time_ns", "samples_ns")


@dataclass
class OpRow:
    measurement: OpMeasurement
    summary: Summary | None = None  # ns per call
    flops: int = 0
    bytes_moved: int = 0
    bound: str | None = None  # "compute" or "memory"
    gflops: float | None = None
    gflops_ci: Interval = None
    gbs: float | None = None
    gbs_ci: Interval = None
    pct_theoretical: float | None = None
    pct_theoretical_ci: Interval = None
    pct_measured: float | None = None
    pct_measured_ci: Interval = None
    theoretical_gflops: float | None = None  # the peak the row was compared with
    measured_ceiling: float | None = None  # GFLOP/s (compute-bound) or GB/s (memory-bound) it was compared with
    within_tolerance: bool | None = None
    measured_ceiling_source: str | None = None  # the GEMM library that gave the ceiling, or the triad

    @property
    def status(self) -> str:
        m = self.measurement
        return "unsupported" if m.unsupported else "error" if m.error else "ok"


def _rate(work: float, summary: Summary, scale: float) -> tuple[float, Interval]:
    """work per second / scale, at the median and across the CI of the time (a longer time, a lower rate)."""
    rate = work / (summary.median / 1e9) / scale
    ci = summary.ci95
    return rate, ((work / (ci[1] / 1e9) / scale, work / (ci[0] / 1e9) / scale) if ci else None)


def _share(value: float, ci: Interval, of: float | None) -> tuple[float | None, Interval]:
    if not of:
        return None, None
    return 100 * value / of, ((100 * ci[0] / of, 100 * ci[1] / of) if ci else None)


def analyse(measurement: OpMeasurement, cpu: CpuPeak, ceilings: Ceilings, threads: int) -> OpRow:
    row = OpRow(measurement)
    case = measurement.case
    op = OPERATORS[case.op]
    row.flops = op.flops(case.shape)
    row.bytes_moved = op.bytes_for(case.shape, case.precision, measurement.io_itemsize)
    row.bound = roofline_bound(row.flops, row.bytes_moved, ceilings, case.precision)
    if not measurement.samples_ns:
        return row
    row.summary = s = summarize(measurement.samples_ns)
    row.gflops, row.gflops_ci = _rate(row.flops, s, 1e9)
    row.gbs, row.gbs_ci = _rate(row.bytes_moved, s, 1e9)
    used = (measurement.threads or {}).get("threads") or threads
    if row.bound == "compute":
        row.theoretical_gflops = cpu.gflops(case.precision, used)
        row.pct_theoretical, row.pct_theoretical_ci = _share(row.gflops, row.gflops_ci, row.theoretical_gflops)
        row.measured_ceiling = ceilings.gemm(case.precision)
        row.measured_ceiling_source = ceilings.gemm_sources.get(case.precision)
        row.pct_measured, row.pct_measured_ci = _share(row.gflops, row.gflops_ci, row.measured_ceiling)
    else:
        row.measured_ceiling, row.measured_ceiling_source = ceilings.bandwidth_gbs, "triad"
        row.pct_measured, row.pct_measured_ci = _share(row.gbs, row.gbs_ci, ceilings.bandwidth_gbs)
    if measurement.max_rel_error is not None:
        row.within_tolerance = measurement.max_rel_error <= TOLERANCE[case.precision]
    return row


def unit(precision: str) -> str:
    return "GOP/s" if precision == "int8" else "GFLOP/s"


def row_dict(r: OpRow) -> dict:
    m = r.measurement
    op = OPERATORS[m.case.op]
    return {
        "op": m.case.op, "shape": list(m.case.shape), "dims": list(op.dims(m.case.shape)), "label": m.case.label,
        "engine": m.engine, "precision": m.case.precision, "status": r.status,
        "unsupported": m.unsupported, "error": m.error, "note": m.note, "threads": m.threads,
        "time_ns": r.summary.to_dict() if r.summary else None, "samples_ns": m.samples_ns,
        "flops": r.flops, "bytes_moved": r.bytes_moved, "io_bytes_per_element": m.io_itemsize,
        "flops_per_byte": r.flops / r.bytes_moved, "bound": r.bound,
        "gflops": r.gflops, "gflops_ci95": r.gflops_ci, "gbs": r.gbs, "gbs_ci95": r.gbs_ci,
        "rate_unit": unit(m.case.precision), "measured_ceiling_source": r.measured_ceiling_source,
        "theoretical_gflops": r.theoretical_gflops, "measured_ceiling": r.measured_ceiling,
        "pct_of_theoretical_peak": r.pct_theoretical, "pct_of_theoretical_peak_ci95": r.pct_theoretical_ci,
        "pct_of_measured_ceiling": r.pct_measured, "pct_of_measured_ceiling_ci95": r.pct_measured_ci,
        "max_rel_error": m.max_rel_error, "tolerance": TOLERANCE[m.case.precision],
        "within_tolerance": r.within_tolerance,
    }


def op_figures(r: OpRow) -> dict:
    """A stored result's details["op"]: the row less what the Result holds itself (engine, status, samples, ...)."""
    return {k: v for k, v in row_dict(r).items() if k not in _HELD_BY_RESULT}


def op_fidelity(r: OpRow) -> dict:
    """A stored result's fidelity: the output check against numpy."""
    precision = r.measurement.case.precision
    return {"metric": FIDELITY_METRIC, "value": r.measurement.max_rel_error, "ok": bool(r.within_tolerance),
            "threshold": TOLERANCE[precision]}


__all__ = ["OpRow", "analyse", "row_dict", "op_figures", "op_fidelity", "unit", "FIDELITY_METRIC"]
