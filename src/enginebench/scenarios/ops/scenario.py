"""Single operators as a scenario (`enginebench ops`): each cell is one case (operator × shape × precision) on one
engine, measured in the launcher's child like every other cell (execution/child.py), in that engine's own
processes: a crash or a hang costs the cell it was running, and a fresh process goes on with the rest.

A cell times the engine's single-operator kernels (Engine.op_kernels; numpy's, the reference row, in
numpy_kernels.py), not a model: the kernels are set up once per process and kept for the job's next cells. In
the measuring process, for each case: inputs made and converted, the graph built and compiled, one call checked
against numpy float64 (int8: numpy's exact int64 matmul), then the call timed under the stopping rule, and its
rates and shares of the machine's peaks (figures.py) derived against the peaks the plan gives (Plan.context:
"cpu", the theoretical peak, and "ceilings", the measured ones). An operator or precision the engine cannot
express is stored as skipped, with the engine's reason.
"""

from __future__ import annotations

import time

import numpy as np

from enginebench.engines.kernels import Kernels, Unsupported
from enginebench.measure.memory import peak_rss_mb
from enginebench.measure.timing import StoppingRule, measure_calls
from enginebench.models.spec import ModelSpec
from enginebench.plan import Cell
from enginebench.scenarios.base import CellRun, Grid, Measurement, NotRunnable, Scenario
from enginebench.scenarios.ops.case import CaseSettings, OpCase, OpMeasurement
from enginebench.scenarios.ops.definitions import OPERATORS, check_output, make_inputs
from enginebench.scenarios.ops.engines import kernels_class, version
from enginebench.scenarios.ops.figures import analyse, op_fidelity, op_figures

#: the plan's model: op cells run none (each result's model is its operator)
NO_MODEL = ModelSpec(name="operators", kind="operators", path="", format="", architecture="", params=0,
                     size_bytes=0, content_hash="", hidden_size=0, max_positions=0)


class Operators(Scenario):
    name = "op"
    model_kinds = ()  # not a `run --scenario`: `enginebench ops` plans it
    times_kernels = True

    def cells(self, grid: Grid, settings: list[CaseSettings] | None) -> list[Cell]:
        """Every case (`settings`, one per case) on every engine of the grid, case by case; threads per engine:
        the grid's first --threads, else every core."""
        threads = grid.threads[0] if grid.threads else grid.cores
        return [Cell(engine, s.case.precision, self.name, s.case.workload, s.case.batch, 1, threads, settings=s)
                for s in settings or () for engine in grid.engines if s.case.precision in grid.precisions]

    def measure(self, run: CellRun) -> Measurement:
        case = run.cell.settings.case
        m = measure_case(run.cell.engine, _kernels(run), case, run.rule)
        row = analyse(m, run.context["cpu"], run.context["ceilings"], run.cell.threads)
        if m.unsupported:  # skipped, with what the kernels said of their threads
            raise NotRunnable(m.unsupported, {"op": op_figures(row)})
        return Measurement([np.asarray(m.samples_ns, dtype=np.int64)], items_per_call=case.batch,
                           tokens_per_item=case.tokens, load_s=m.prepare_s, peak_rss_mb=m.peak_rss_mb,
                           executed_precision=case.precision, wall_s=m.wall_s, details={"op": op_figures(row)},
                           fidelity=op_fidelity(row))

    def result_context(self, cell: Cell, given: dict) -> dict:
        """The operator as the model, the phase's tokens as seq_len, the case's work and bound in details["op"]
        (a measured cell's own figures replace them)."""
        case = cell.settings.case
        row = analyse(OpMeasurement(case, cell.engine), given["cpu"], given["ceilings"], cell.threads)
        return {"model": case.op, "seq_len": case.tokens, "engine_version": version(cell.engine),
                "engine_options": {}, "details": {"op": op_figures(row)}}

    def table(self, result) -> str:
        return "operators"

    frame_columns = {
        "op": "string", "dims": "string", "bound": "string", "flops": "Int64", "bytes_moved": "Int64",
        "flops_per_byte": "float64", "rate_unit": "string",
        "gflops": "float64", "gflops_ci95_lo": "float64", "gflops_ci95_hi": "float64",
        "gbs": "float64", "gbs_ci95_lo": "float64", "gbs_ci95_hi": "float64",
        "pct_of_theoretical_peak": "float64", "pct_of_theoretical_peak_ci95_lo": "float64",
        "pct_of_theoretical_peak_ci95_hi": "float64", "theoretical_gflops": "float64",
        "pct_of_measured_ceiling": "float64", "pct_of_measured_ceiling_ci95_lo": "float64",
        "pct_of_measured_ceiling_ci95_hi": "float64", "measured_ceiling": "float64",
        "measured_ceiling_source": "string", "max_rel_error": "float64", "tolerance": "float64",
    }

    def frame_values(self, result) -> dict:
        """The rates and shares the ops table shows (details["op"]), a CI as two columns; `gflops` is GOP/s for
        int8 rows (rate_unit says which)."""
        op = (result.details or {}).get("op") or {}
        out = {k: op.get(k) for k in self.frame_columns if k in op and not isinstance(op.get(k), (list, dict))}
        out["dims"] = "×".join(str(d) for d in op.get("dims") or ()) or None  # the shape's named dimensions, e.g. M×K×N
        for name in ("gflops", "gbs", "pct_of_theoretical_peak", "pct_of_measured_ceiling"):
            lo, hi = op.get(f"{name}_ci95") or (None, None)
            out[f"{name}_ci95_lo"], out[f"{name}_ci95_hi"] = lo, hi
        return out

    def settings_from_dict(self, d: dict) -> CaseSettings:
        return CaseSettings.from_dict(d)


def _kernels(run: CellRun) -> Kernels:
    """The cell's engine's kernels, set up once in this process (before the engine's library is imported, where
    that matters) on the cell's threads, and kept for the job's next cells."""
    kernels = run.cache.get("kernels")
    if kernels is None:
        kernels = kernels_class(run.cell.engine)()
        kernels.setup(run.cell.threads)
        run.cache["kernels"] = kernels
    return kernels


def measure_case(engine: str, kernels: Kernels, case: OpCase, rule: StoppingRule) -> OpMeasurement:
    """One case on `kernels`, in this process; what the engine cannot express comes back as `unsupported`, any
    other failure is raised."""
    op = OPERATORS[case.op]
    result = OpMeasurement(case, engine)
    try:
        if op.why_not(case.precision):  # e.g. softmax in int8: the same reason on every engine
            raise Unsupported(op.why_not(case.precision))
        inputs = make_inputs(op, case.shape, case.precision)
        started = time.perf_counter()
        prepared = kernels.prepare(op.name, inputs, case.precision)
        result.prepare_s = time.perf_counter() - started
        result.note, result.io_itemsize = prepared.note, prepared.io_itemsize
        result.max_rel_error = check_output(op, inputs, prepared.fetch(prepared.run(prepared.arg)))
        started = time.perf_counter()
        result.samples_ns = measure_calls(prepared.run, [prepared.arg], rule).tolist()
        result.wall_s = time.perf_counter() - started
        result.peak_rss_mb = peak_rss_mb()
    except Unsupported as e:
        result.unsupported = str(e)
    result.threads = dict(kernels.threads_info)
    return result


__all__ = ["Operators", "NO_MODEL", "measure_case"]
