"""`enginebench ops` results as a table or JSON: the rows the scenario measured (scenarios/ops/figures.py: rates
and shares of the machine's peaks), read back from the stored results.

Stored, each row is a Result like a model's (scenario "op", model = the operator, workload = the shape and
its label), its statistics and verdict built by store/derive.py, the output check as its fidelity, and the
figures in details["op"]; `stored_rows` turns a stored run back into rows. The measured GEMM ceiling of a
precision is the fastest library's (numpy, torch, onnxruntime), named below the table.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from enginebench.formats.tables.section import Section
from enginebench.measure.peak import Ceilings, CpuPeak
from enginebench.measure.stats import summarize
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.ops.case import OpCase, OpMeasurement
from enginebench.scenarios.ops.definitions import OPERATORS, TOLERANCE, format_shape
from enginebench.scenarios.ops.figures import FIDELITY_METRIC, Interval, OpRow, analyse, row_dict, unit
from enginebench.scenarios.registry import table_of
from enginebench.store.model import Result, Run


def _fig(value: float | None, ci: Interval = None) -> str:
    """`value ± half the CI`, with decimals for three significant figures; `—` when there is no value."""
    if value is None:
        return "—"
    digits = 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2 if abs(value) >= 1 else 3
    text = f"{value:.{digits}f}"
    if not ci:
        return text
    below, above = value - ci[0], ci[1] - value
    if max(below, above) > 0.1 * abs(value) and min(below, above) * 3 < max(below, above):
        # wide and lopsided (a rate from a noisy time): `±` would hide which side is long, give the ends
        return f"{text} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"
    return f"{text} ± {(ci[1] - ci[0]) / 2:.{digits}f}"


def _error_cell(row: OpRow) -> str:
    err = row.measurement.max_rel_error
    if err is None:
        return "—"
    if err == 0 and row.measurement.case.precision == "int8":
        return "exact"
    tol = TOLERANCE[row.measurement.case.precision]
    return f"{err:.1e}" if row.within_tolerance else f"{err:.1e} ✗ > {tol:.0e}"


def _note(row: OpRow) -> str:
    m = row.measurement
    if m.unsupported:
        return f"cannot: {m.unsupported}"
    if m.error:
        return f"failed: {m.error}"
    return m.note


HEADERS = ["op", "shape", "from", "engine", "precision", "µs per call", "GFLOP/s", "GB/s", "FLOP per byte", "bound",
           "% of theoretical peak", "% of measured ceiling", "max rel. error", "note"]
INT8_RATE = "GFLOP/s (int8: GOP/s)"


def headers(rows: list[OpRow]) -> list[str]:
    """HEADERS, the rate's unit saying GOP/s for int8 rows when there are any."""
    if not any(r.measurement.case.precision == "int8" for r in rows):
        return list(HEADERS)
    return [INT8_RATE if h == "GFLOP/s" else h for h in HEADERS]


def table_rows(rows: list[OpRow]) -> tuple[list[list[str]], list[str]]:
    """(cells, statuses): a row failed, out of tolerance (unfaithful), skipped (not ok) or ok."""
    cells, statuses = [], []
    for r in rows:
        case, s = r.measurement.case, r.summary
        time = _fig(s.median / 1e3, (s.ci95[0] / 1e3, s.ci95[1] / 1e3) if s and s.ci95 else None) if s else "—"
        cells.append([case.op, format_shape(case.shape), case.label or "--shape", r.measurement.engine,
                      case.precision, time,
                      _fig(r.gflops, r.gflops_ci), _fig(r.gbs, r.gbs_ci), f"{r.flops / r.bytes_moved:.2f}",
                      r.bound or "—", _fig(r.pct_theoretical, r.pct_theoretical_ci),
                      _fig(r.pct_measured, r.pct_measured_ci), _error_cell(r), _note(r)])
        statuses.append("failed" if r.status == "error" else "unfaithful" if r.within_tolerance is False
                        else "skipped" if r.status != "ok" else "ok")
    return cells, statuses


def machine_lines(cpu: CpuPeak, ceilings: Ceilings, threads: int, precisions: set[str] = frozenset()) -> list[str]:
    peaks = ", ".join(f"{p} {cpu.gflops(p, threads):.0f} {unit(p)} ({cpu.instructions[p]})" if cpu.gflops(p, threads)
                      else f"{p} unknown" for p in cpu.flops_per_cycle) or "unknown (no vector flags found)"
    clock = f"{cpu.clock_ghz:.2f} GHz from {cpu.clock_source}" if cpu.clock_ghz else cpu.clock_source
    gemms = {"fp32": ceilings.gemm_gflops, **ceilings.gemm_by_precision}
    no_int8 = [op.name for op in OPERATORS.values() if op.why_not("int8")]
    return [
        f"theoretical peak, {min(threads, cpu.physical_cores)} of {cpu.physical_cores} physical cores × {clock}: {peaks}",
        "measured ceilings: GEMM " + ", ".join(f"{p} {g:.1f} {unit(p)}" for p, g in gemms.items())
        + f"; triad {ceilings.bandwidth_gbs:.1f} GB/s ({ceilings.threads} threads); ridge {ceilings.ridge:.1f} "
        f"FLOP/byte (fp32); {ceilings.source}",
        *[f"measured {p} GEMM: {how}" for p, how in ceilings.gemm_sources.items() if p in precisions],
        *(["compute-bound rows in a precision without a measured GEMM ceiling show no % of measured ceiling"]
          if any(p != "fp32" and p not in ceilings.gemm_by_precision for p in precisions) else []),
        *([f"int8: the GEMMs only, int8 × int8 summed in int32, in GOP/s (a multiply-add is 2 ops); "
           f"{', '.join(no_int8)} have no int8 kernel and are left out unless --op or --shape names them"]
          if "int8" in precisions else []),
        "bound: compute when FLOP per byte ≥ the ridge (shares of GFLOP/s), else memory (shares of the triad's "
        "GB/s; no theoretical bandwidth is known, and cache-resident data can pass 100%)",
        "max rel. error = max |out − ref| / max |ref| against numpy float64 (int8: int64, exact); tolerance "
        + ", ".join(f"{p} {t:.0e}" for p, t in TOLERANCE.items() if p in precisions or not precisions),
    ]


def _section(rows: list[OpRow], title: str, legend: list[str]) -> Section:
    cells, statuses = table_rows(rows)
    return Section(title, headers(rows), cells, keys=5,
                   left=frozenset({"op", "shape", "from", "engine", "precision", "bound", "note"}),
                   statuses=statuses, legend=legend, repeat=3)


def render_ops(rows: list[OpRow], cpu: CpuPeak, ceilings: Ceilings, rule: StoppingRule, threads: int,
               console=None) -> None:
    from rich.console import Console

    _section(rows, f"operators, {threads} threads: median ± 95% CI half-width ({rule.describe()})",
             machine_lines(cpu, ceilings, threads, {r.measurement.case.precision for r in rows})).print(
        console or Console())


def ops_json(rows: list[OpRow], cpu: CpuPeak, ceilings: Ceilings, rule: StoppingRule, threads: int,
             run_id: str | None = None) -> str:
    return json.dumps({
        "run_id": run_id, "threads": threads, "rule": asdict(rule),
        "machine": {"theoretical": {**cpu.to_dict(), "gflops": {p: cpu.gflops(p, threads) for p in cpu.flops_per_cycle}},
                    "measured": ceilings.to_dict()},
        "rows": [row_dict(r) for r in rows],
    }, indent=2)


def stored_rows(results: list[Result]) -> list[OpRow]:
    """A stored run's op results back as rows (the figures as they were computed when measured)."""
    rows = []
    for res in results:
        if table_of(res) != "operators":
            continue
        d = res.details.get("op") or {}
        case = OpCase(res.model, tuple(d.get("shape") or ()), res.precision, d.get("label") or "",
                      res.batch_size, res.seq_len)
        m = OpMeasurement(case, res.engine, res.samples or None, d.get("max_rel_error"),
                          d.get("io_bytes_per_element"), d.get("note") or "",
                          unsupported=res.error if res.status == "skipped" else None,
                          error=res.error if res.status == "failed" else None, threads=d.get("threads"),
                          engine_version=res.engine_version)
        ci = {k: tuple(d[k]) if d.get(k) else None for k in ("gflops_ci95", "gbs_ci95", "pct_of_theoretical_peak_ci95",
                                                            "pct_of_measured_ceiling_ci95")}
        rows.append(OpRow(m, summarize(res.samples) if res.samples else None, d.get("flops", 0),
                          d.get("bytes_moved", 1), d.get("bound"), d.get("gflops"), ci["gflops_ci95"], d.get("gbs"),
                          ci["gbs_ci95"], d.get("pct_of_theoretical_peak"), ci["pct_of_theoretical_peak_ci95"],
                          d.get("pct_of_measured_ceiling"), ci["pct_of_measured_ceiling_ci95"],
                          d.get("theoretical_gflops"), d.get("measured_ceiling"), d.get("within_tolerance"),
                          d.get("measured_ceiling_source")))
    return rows


def section(run: Run) -> Section | None:
    """A stored ops run as `enginebench ops` printed it: the rows, then the machine lines it recorded."""
    rows = stored_rows(run.results)
    if not rows:
        return None
    ops = run.config.get("ops") or {}
    return _section(rows, f"operators, {ops.get('threads', '?')} threads: median ± 95% CI half-width",
                    ops.get("machine_lines") or [])


__all__ = ["OpRow", "analyse", "stored_rows", "section", "FIDELITY_METRIC", "table_rows",
           "render_ops", "ops_json", "row_dict", "machine_lines", "HEADERS", "headers", "unit"]
