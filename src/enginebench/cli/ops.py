"""`enginebench ops`: single operators per engine, with their share of the machine's peak."""

from __future__ import annotations

from enginebench.api import execute
from enginebench.cli.args import DEFAULT_DB
from enginebench.config import comma_list, positive_int, seconds
from enginebench.errors import UsageError
from enginebench.formats.tables.ops import machine_lines, ops_json, render_ops, stored_rows
from enginebench.measure.cpu_features import usable_cpus
from enginebench.measure.peak import Ceilings, CpuPeak, cpu_peak
from enginebench.measure.roofline import measure_ceilings
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Plan
from enginebench.scenarios.base import Grid
from enginebench.scenarios.ops.case import CaseSettings, OpCase
from enginebench.scenarios.ops.definitions import OPERATORS, PRECISIONS, require_operator
from enginebench.scenarios.ops.engines import install_hint, installed, ops_engines
from enginebench.scenarios.ops.scenario import NO_MODEL, Operators
from enginebench.store.database import ResultStore


def add_parsers(sub) -> None:
    ops = sub.add_parser("ops", help="time single operators (GEMM, softmax, attention, …) per engine, with %% of "
                                     "the machine's peak")
    ops.add_argument("--op", action="append", default=None,
                     help=f"operators, comma list [{','.join(OPERATORS)}]")
    ops.add_argument("--model", action="append", default=None,
                     help="whose shapes to time, comma list: minilm (batch 1 and 32 × 128 tokens), smollm2-135m "
                          "(prefill 128 tokens, decode), llama2-7b-synthetic (decode), or a folder with config.json "
                          "or a .gguf file; read from the model's config [minilm]")
    ops.add_argument("--shape", action="append", default=[], metavar="[OP=]DIMS",
                     help="e.g. matmul=128x384x384 (M×K×N), attention=12x128x32 (H×S×D); a bare DIMS when one "
                          "--op is chosen; repeat for several; replaces the model's shapes for that operator")
    ops.add_argument("--engine", action="append", default=None,
                     help="engines, comma list [numpy and every installed engine that has operator kernels; a "
                          "name it does not know is answered with the list]")
    ops.add_argument("--precision", action="append", default=None,
                     help=f"comma list of {','.join(PRECISIONS)} [fp32]; int8 times the GEMMs (matmul, linear: int8 × "
                          "int8 summed in int32, GOP/s), the other operators only when --op or --shape names them (as "
                          "skipped rows saying why)")
    ops.add_argument("--threads", help="threads per engine [number of usable CPUs]")
    ops.add_argument("--duration", default="1s", help="time to measure each operator, at least [1s]")
    ops.add_argument("--min-samples", default="10", help="calls to measure each operator, at least [10]")
    ops.add_argument("--warmup", default="0.2s", help="warm-up time per operator [0.2s]")
    ops.add_argument("--timeout", default="10m", help="time one operator may take on an engine (its setup "
                     "included) before the engine's process is ended; a fresh one goes on with the rest [10m]")
    ops.add_argument("--db", default=DEFAULT_DB, help="SQLite database: the results are stored there as a run "
                     "(`enginebench show`), and `enginebench machine`'s ceilings read from it; without them a "
                     f"short measurement is made now [{DEFAULT_DB}]")
    ops.add_argument("--json", action="store_true", help="print the results as JSON")


def _explicit_shapes(shape_args, chosen) -> dict[str, list]:
    shapes: dict[str, list] = {}
    for text in shape_args:
        name, eq, dims = text.rpartition("=")
        if not eq:
            if not chosen or len(chosen) != 1:
                raise UsageError(f"--shape {text!r} names no operator: write --shape OP=DIMS (e.g. "
                                 "matmul=128x384x384), or choose one --op")
            name = chosen[0]
        op = require_operator(name.strip())
        shapes.setdefault(op.name, []).append(op.parse_shape(dims))
    return shapes


def _cases(op_args, shape_args, precisions, model_args=None):
    """Every (operator, shape, precision) to time: the models' shapes, or --shape's for the operators it names.
    An operator with no kernel in a precision (softmax in int8) is left out, unless --op or --shape names it: then
    its rows say why."""
    from enginebench.scenarios.ops.shapes import shapes_for

    chosen = comma_list(op_args)
    shapes = _explicit_shapes(shape_args, chosen)
    names = chosen or list(shapes) or list(OPERATORS)
    for name in names:
        require_operator(name)
    extra = [n for n in shapes if n not in names]
    if extra:
        raise UsageError(f"--shape for {', '.join(extra)}, which --op leaves out: add it to --op")
    from_models = [n for n in names if n not in shapes]
    models = comma_list(model_args) or ["minilm"]
    found = [s for m in models for s in shapes_for(m) if s.op in from_models] if from_models else []
    missing = [n for n in from_models if chosen and not any(s.op == n for s in found)]
    if missing:
        raise UsageError(f"{', '.join(models)} runs no {', '.join(missing)}: give --shape "
                         f"{missing[0]}=DIMS, or another --model")

    def wanted(name, precision):
        return name in (chosen or ()) or name in shapes or not OPERATORS[name].why_not(precision)

    cases = [OpCase(s.op, s.shape, p, s.label, s.batch, s.tokens) for s in found for p in precisions
             if wanted(s.op, p)]
    return cases + [OpCase(name, shape, p) for name in names for shape in shapes.get(name, ()) for p in precisions
                    if wanted(name, p)]


def _engines(engine_args) -> list[str]:
    names = comma_list(engine_args)
    if not names:
        names = [n for n in ops_engines() if installed(n)]
        if not names:
            raise UsageError("no engine is installed: pip install 'enginebench[torch]'")
        return names
    for name in names:
        if name not in ops_engines():
            raise UsageError(f"unknown engine {name!r} for ops: choose among {', '.join(ops_engines())}")
        if not installed(name):
            raise UsageError(f"{name} is not installed: {install_hint(name)}")
    return names


def ops_plan(engines: list[str], cases: list[OpCase], rule: StoppingRule, threads: int, timeout_s: float,
             cpu: CpuPeak, ceilings: Ceilings) -> Plan:
    """Every case on every engine as cells of the op scenario, case by case, measured against `cpu`'s peaks
    and `ceilings`; each engine runs in its own child processes, `timeout_s` for one cell (and its setup)."""
    grid = Grid(engines, list(dict.fromkeys(c.precision for c in cases)), [], [], [1], [threads], [], threads)
    cells = Operators().cells(grid, [CaseSettings(case) for case in cases])
    return Plan(NO_MODEL, {}, cells, rule, {}, timeout_s=timeout_s, reference_engine=None,
                load_timeout_s=timeout_s, context={"cpu": cpu, "ceilings": ceilings})


def _run_config(args, rule, threads, cpu, ceilings, precisions) -> dict:
    """What an ops run stores as its configuration (not a RunConfig's: it is not resumed)."""
    options = {k: v for k, v in vars(args).items() if k != "command" and not callable(v)}
    return {"command": "ops", "options": options, "stopping_rule": rule.to_dict(), "repeat": 1,
            "timeout_s": seconds("--timeout", args.timeout),
            "ops": {"threads": threads, "cpu_peak": cpu.to_dict(), "ceilings": ceilings.to_dict(),
                    "machine_lines": machine_lines(cpu, ceilings, threads, set(precisions))}}


def cmd_ops(args) -> int:
    precisions = comma_list(args.precision) or ["fp32"]
    for p in precisions:
        if p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r} for ops: choose among {', '.join(PRECISIONS)}")
    engines = _engines(args.engine)
    threads = positive_int("--threads", args.threads) if args.threads else usable_cpus()
    rule = StoppingRule(duration_s=seconds("--duration", args.duration),
                        min_samples=positive_int("--min-samples", args.min_samples),
                        warmup_s=seconds("--warmup", args.warmup, allow_zero=True))
    timeout = seconds("--timeout", args.timeout)
    cases = _cases(args.op, args.shape, precisions, args.model)
    with ResultStore(args.db) as store:  # a database that cannot be written is said before measuring
        cpu = cpu_peak()
        ceilings = store.ceilings() or measure_ceilings(precisions=precisions)
    plan = ops_plan(engines, cases, rule, threads, timeout, cpu, ceilings)
    run = execute(plan, db=args.db, record=_run_config(args, rule, threads, cpu, ceilings, precisions))
    rows = stored_rows(run.results)  # case by case, then engine: the plan's order
    if args.json:
        print(ops_json(rows, cpu, ceilings, rule, threads, run_id=run.run_id))
    else:
        render_ops(rows, cpu, ceilings, rule, threads)
        print(f"stored as run {run.run_id} in {args.db}: `enginebench show {run.run_id} --db {args.db}`")
    return 0 if any(r.status == "ok" for r in rows) else 1


COMMANDS = {"ops": cmd_ops}
