"""The Python API: what the command line does, as functions that return data.

    import enginebench as eb
    run = eb.run(model="minilm", engines=["torch", "onnxruntime"], batch_size=[1, 16], duration="2s")
    frame = run.to_pandas()            # one row per result
    old = eb.load("20261125-101500-ab12cd", db="enginebench.db")

Options are those of `enginebench run` (see `enginebench run --help`), named as keywords: a list or a comma
string where the command takes a list, durations as numbers of seconds or with units ("500ms", "2m").
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone

from enginebench.errors import UsageError
from enginebench.results.model import Run

DEFAULT_DB = "enginebench.db"
_PLURALS = {"engines": "engine", "precisions": "precision", "workloads": "workload", "scenarios": "scenario",
            "options": "option"}  # keyword spellings a Python user reaches for -> RunOptions fields


def run(model: str | None = None, *, db: str | None = DEFAULT_DB, on_start=None, on_result=None, **options) -> Run:
    """Measure, store (unless db=None: then in memory only) and return the Run.

    `on_start(cell)` and `on_result(index, result)` see progress; every result is stored as it arrives."""
    from enginebench.planning import RunOptions, plan_from_options

    fields = set(RunOptions.__dataclass_fields__)
    given = {}
    for key, value in options.items():
        name = _PLURALS.get(key, key)
        if name not in fields:
            raise UsageError(f"eb.run() got an unknown option {key!r}: use the names of `enginebench run --help` "
                             f"({', '.join(sorted(fields))})")
        given[name] = _as_text(value)
    opts = RunOptions(model=model, **given)
    plan, quick = plan_from_options(opts)
    argv = _argv(opts)
    return execute(plan, db=db, argv=argv, quick=quick, on_start=on_start, on_result=on_result)


def _as_text(value):
    """Numbers and lists of numbers as the command line would give them: the checks read text."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, (bool, dict)) or value is None:
        return value
    return str(value)


def _argv(opts) -> list[str]:
    """The `enginebench run` arguments that reproduce these options."""
    from dataclasses import fields

    from enginebench.planning import RunOptions

    default = RunOptions()
    argv: list[str] = []
    for f in fields(opts):
        value = getattr(opts, f.name)
        if value == getattr(default, f.name) or value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag)
        elif isinstance(value, dict):  # {engine: {key: value}}
            argv += [x for engine, kv in value.items() for k, v in kv.items() for x in ("-o", f"{engine}.{k}={v}")]
        elif isinstance(value, list):
            if f.name == "option":
                argv += [x for item in value for x in ("-o", item)]
            else:
                argv += [flag, ",".join(value)]
        else:
            argv += [flag, value]
    return argv


def execute(plan, *, db: str | None = DEFAULT_DB, argv: list[str], quick: bool = False, on_start=None,
            on_result=None, launcher=None) -> Run:
    """Run a checked Plan: one child process per cell and repetition; each result is stored the moment it
    arrives (a crash later loses nothing measured). `launcher`: one made for this plan that runs it elsewhere,
    e.g. launchers.ray.RayLauncher(plan, "local") [the local orchestrator]."""
    from enginebench.measure.machine import machine_info
    from enginebench.launchers.local import Orchestrator
    from enginebench.results.store import ResultStore

    store = ResultStore(db if db is not None else ":memory:")
    orchestrator = launcher or Orchestrator(plan)
    if plan.model.kind == "decoder" and orchestrator.where == "local":  # another machine's speed is not known here
        import socket

        speed = store.machine_speed(socket.gethostname())
        plan.machine_speed = {k: speed[k] for k in ("bandwidth_gbs", "gemm_gflops", "measured_at")} if speed else None
    if on_start:
        orchestrator.on_start = on_start
    now = datetime.now(timezone.utc)
    run = Run(
        run_id=now.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6],
        created_at=now.isoformat(timespec="seconds"),
        machine=machine_info(),
        config={"argv": argv, "model": plan.model.to_dict(), "stopping_rule": plan.rule.to_dict(),
                "timeout_s": plan.timeout_s, "load_timeout_s": plan.load_timeout_s, "quick": quick,
                "engine_options": plan.engine_options,
                "workloads": {k: w.spec.to_dict() for k, w in plan.workloads.items()},
                "repeat": plan.repeat, "order_seed": plan.order_seed, "cell_order": orchestrator.cell_order(),
                "launcher": orchestrator.where},
    )
    store.add_run(run)
    by_cell: dict[int, object] = {}

    def emit(index, result):
        store.add_result(run.run_id, result, cell=index)  # committed before anything else can go wrong
        by_cell[index] = result
        if on_result:
            on_result(index, result)

    try:
        orchestrator.run(emit)
    finally:
        run.results = [by_cell[i] for i in sorted(by_cell)]
        store.close()
    return run


def load(run_id: str | None = None, db: str = DEFAULT_DB) -> Run:
    """A stored run (the newest when run_id is None)."""
    from enginebench.results.store import ResultStore

    if not os.path.exists(db):
        raise UsageError(f"no database at {db}: run `enginebench run` first or pass db=")
    with ResultStore(db) as store:
        return store.load_run(run_id)


def _as_run(run, db: str) -> Run:
    return run if isinstance(run, Run) else load(run, db=db)


def compare(base, new, *, threshold: float = 0.05, db: str = DEFAULT_DB, seed: int = 0):
    """Compare two runs (Run objects or stored run ids) cell by cell: ratio of medians with its CI, verdicts,
    cells only in one run, machine and version differences. See results/compare.py."""
    from enginebench.results.compare import compare_runs

    return compare_runs(_as_run(base, db), _as_run(new, db), threshold=threshold, seed=seed)


def recommend(runs=None, *, db: str = DEFAULT_DB, **constraints):
    """The best configuration among stored results under constraints (model, workload, min_fidelity, objective,
    max_memory_mb, batch_size, accept_warn), with its speed-up over the default path and the command that
    reproduces it. `runs`: Run objects or run ids [every stored run of the newest run's model, or of model=]."""
    from enginebench.results.recommend import Constraints, load_runs, recommend as best
    from enginebench.results.store import ResultStore

    if runs is None:
        if not os.path.exists(db):
            raise UsageError(f"no database at {db}: run `enginebench run` first or pass db=")
        with ResultStore(db) as store:
            runs = load_runs(store, [], constraints.get("model"))
    runs = [_as_run(r, db) for r in runs]
    fields = set(Constraints.__dataclass_fields__)
    unknown = set(constraints) - fields
    if unknown:
        raise UsageError(f"eb.recommend() got unknown constraints {sorted(unknown)}: use {', '.join(sorted(fields))}")
    return best(runs, Constraints(**constraints))


def command_line(run: Run) -> str:
    """The shell command that reproduces a run's options (runs stored before the API kept `run` in argv)."""
    import shlex

    argv = list(run.config.get("argv", []))
    command = "run"
    if argv[:1] in (["run"], ["tune"]):  # a tune round's run: the tune session that made it
        command, argv = argv[0], argv[1:]
    return " ".join(["enginebench", command, *(shlex.quote(a) for a in argv)])


__all__ = ["run", "load", "compare", "recommend", "execute", "command_line", "DEFAULT_DB"]
