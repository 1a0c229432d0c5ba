"""The Python API: what the command line does, as functions that return data.

    import enginebench as eb
    run = eb.run(model="minilm", engines=["torch", "onnxruntime"], batch_size=[1, 16], duration="2s")
    frame = run.to_pandas()            # one row per result
    old = eb.load("20261125-101500-ab12cd", db="enginebench.db")
    done = eb.resume("20261125-101500-ab12cd", db="enginebench.db")   # finish a stopped run: what is missing

Options are those of `enginebench run` (see `enginebench run --help`), named as keywords: a list or a comma
string where the command takes a list, durations as numbers of seconds or with units ("500ms", "2m").
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from enginebench.analysis.compare import compare_runs
from enginebench.analysis.recommend import Constraints, load_runs
from enginebench.analysis.recommend import recommend as best
from enginebench.config import RunConfig
from enginebench.errors import UsageError
from enginebench.execution.local import LocalLauncher
from enginebench.execution.records import history_of
from enginebench.measure.machine import machine_info, parse_cpu_list
from enginebench.measure.peak import measured_here, run_speed
from enginebench.measure.host_load import busy_note
from enginebench.measure.roofline import cached_machine_speed, measure_and_cache_machine_speed
from enginebench.planning import plan_from_config
from enginebench.scenarios.registry import scenario_class
from enginebench.store.database import ResultStore
from enginebench.store.identity import Matching, cell_identity
from enginebench.store.model import Run

DEFAULT_DB = "enginebench.db"


def run(model: str | None = None, *, db: str | None = DEFAULT_DB, on_start=None, on_result=None, **options) -> Run:
    """Measure, store (unless db=None: then in memory only) and return the Run.

    `on_start(cell)` and `on_result(index, result)` see progress; every result is stored as it arrives."""
    config = RunConfig.from_keywords(model, **options)
    return execute(plan_from_config(config), db=db, config=config, on_start=on_start, on_result=on_result)


def new_run_id() -> str:
    """A fresh run id: the UTC time it starts, and a random tail."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def execute(plan, *, db: str | None = DEFAULT_DB, config: RunConfig | None = None, argv: list[str] | None = None,
            on_start=None, on_result=None, launcher=None, run_id: str | None = None,
            resuming: Resumption | None = None, on_note=None, record: dict | None = None) -> Run:
    """Run a checked Plan: one child process per cell and repetition; each result is stored the moment it
    arrives (a crash later loses nothing measured). `config`: the configuration the plan came from, stored with
    the run (resume reads it back); `argv`: the command stored instead for a plan no configuration gives (tune's
    rounds). `launcher`: one made for this plan that runs it elsewhere,
    e.g. execution.ray.RayLauncher(plan, "local") [the local orchestrator]. `run_id`: the new run's id [a fresh
    one]. `resuming`: a stored run to finish instead (see resume()), whose launcher must carry its history.
    `record`: the run's configuration as a command that is not `run` records it (`enginebench ops`), stored
    instead of the plan's (such a run is not resumed)."""
    store = ResultStore(db if db is not None else ":memory:")
    orchestrator = launcher or (resuming.launcher() if resuming else LocalLauncher(plan))
    if resuming:  # the same run, its stored results kept; only what is missing arrives
        run, by_cell = resuming.run, dict(resuming.stored)
    else:
        now = datetime.now(timezone.utc)
        run = Run(
            run_id=run_id or new_run_id(),
            created_at=now.isoformat(timespec="seconds"),
            machine=machine_info(),
            config=record if record is not None else run_record(plan, orchestrator, config=config, argv=argv),
        )
        store.add_run(run)
        by_cell = {}

    def arrived(index, result):
        by_cell[index] = result
        if on_result:
            on_result(index, result)

    emit = start_run(store, plan, orchestrator, run.run_id, on_start=on_start, on_result=arrived, on_note=on_note)
    try:
        orchestrator.run(emit)
    except KeyboardInterrupt as e:
        resumable = db is not None and record is None
        e.add_note(f"enginebench: {len(by_cell)} results of run {run.run_id} are stored"
                   + (f" in {db}" if db is not None else "")
                   + (f"; eb.resume({run.run_id!r}, db={db!r}) finishes it" if resumable else ""))
        raise
    finally:
        run.results = [by_cell[i] for i in sorted(by_cell)]
        store.close()
    return run


def start_run(store, plan, launcher, run_id: str, *, keys: list[str] | None = None, on_start=None,
              on_result=None, on_note=None):
    """Ready `launcher` to measure `plan` into the stored run `run_id` (every run, a sweep's parts too, is
    measured through here): the plan gets this machine's stored speed for its rooflines, `on_start` sees
    each cell, and the emit returned stores each result the moment it arrives (under its sweep key when `keys`
    are given), then tells `on_result`. `on_note(text)` hears what happens before the first cell (the machine's
    ceilings measured once)."""
    if launcher.where == "local":  # another machine's speed is not known here
        plan.machine_speed = run_speed(this_machine_speed(store, plan, on_note))
    if on_start:
        launcher.on_start = on_start

    def emit(index, result):
        store.add_result(run_id, result, cell=index, key=keys[index] if keys else None)  # committed at once
        if on_result:
            on_result(index, result)

    return emit


def this_machine_speed(store, plan, on_note=None) -> dict | None:
    """This machine's roofline ceilings (`enginebench machine`): from `store`; else, when a cell of the plan shows
    a roofline, from the per-machine cache (a run with another --db measured them), else measured now, before the
    first cell (about half a minute), and kept in both."""
    speed = store.machine_speed(socket.gethostname())
    if measured_here(speed) or not any(scenario_class(c.scenario).shows_roofline(c.engine) for c in getattr(plan, "cells", ())):
        return speed  # a plan that shows no roofline neither needs ceilings nor stores a copy of them
    cached = cached_machine_speed()
    if cached is None:
        if on_note:
            on_note("no roofline ceilings for this machine yet: measuring memory bandwidth and GEMM FLOP/s per "
                    "precision once, before the first cell (about 30 s; `enginebench machine` does it alone)")
        t0 = time.perf_counter()
        cached, by_us = measure_and_cache_machine_speed()
        if on_note:
            how = "measured" if by_us else "measured by another run on this machine meanwhile, ready"
            on_note(f"ceilings {how} in {time.perf_counter() - t0:.0f} s: bandwidth {cached['bandwidth_gbs']:.1f} "
                    f"GB/s, fp32 GEMM {cached['gemm_gflops']:.0f} GFLOP/s; kept for every later run here"
                    + (f"; {busy}" if (busy := busy_note(cached)) else ""))
    store.add_machine_speed(cached)
    return cached


def run_record(plan, launcher, *, config: RunConfig | None, argv: list[str] | None = None) -> dict:
    """What a run stores of how it was asked and planned: the configuration (resume reads it back), the
    command that gives it (for people: show, runs, recommend's reproduce command), the plan's resolved
    settings and the launcher's order of cells."""
    record = {"argv": config.to_argv() if config is not None else list(argv or [])}
    if config is not None:
        record["run_config"] = config.to_dict()
    return record | plan.work_record() | {
        "stopping_rule": plan.rule.to_dict(), "timeout_s": plan.timeout_s,
        "load_timeout_s": plan.load_timeout_s, "quick": config is not None and config.quick,
        "engine_options": plan.engine_options,
        "repeat": plan.repeat, "order_seed": plan.order_seed, "cell_order": launcher.cell_order(),
        "launcher": launcher.where}


def stored_config(run: Run) -> RunConfig:
    """The configuration a run was stored with; a run stored before configurations were (argv only) has its
    command line read back."""
    stored = run.config.get("run_config")
    return RunConfig.from_dict(stored) if stored is not None else RunConfig.from_argv(run.config["argv"])


@dataclass
class Resumption:
    """A stored run read back to be finished: the plan its configuration gives now and what is stored of each
    cell."""

    run: Run  # as stored
    config: RunConfig  # as stored
    plan: object  # enginebench.plan.Plan
    stored: dict = field(default_factory=dict)  # plan index (cells, then planned skips) -> stored Result
    history: dict = field(default_factory=dict)  # plan index -> launchers.records.CellHistory
    retry_failed: bool = False

    def launcher(self, ray: str | None = None, client_nodes: int = 1):
        """The launcher that measures only what is missing: here, or on the Ray cluster at `ray` (with
        `client_nodes`, the clients of a run against a server shared out over that many nodes)."""
        if ray:
            from enginebench.execution.ray import RayLauncher

            return RayLauncher(self.plan, ray, client_nodes=client_nodes, history=self.history,
                               retry_failed=self.retry_failed)
        return LocalLauncher(self.plan, history=self.history, retry_failed=self.retry_failed)

    @property
    def left(self) -> int:
        """Measurements still to make (cell x repetition), plus skipped cells not stored yet: 0 when complete."""
        launcher = self.launcher()
        cells = self.plan.cells
        skipped = [i for i, c in enumerate(cells) if launcher.why_not(c)]
        skipped += range(len(cells), len(cells) + len(self.plan.skips))
        return (sum(launcher.measurements_left(i) for i, c in enumerate(cells) if not launcher.why_not(c))
                + sum(i not in self.stored for i in skipped))

    @property
    def failed(self) -> int:
        """Repetitions stored as failed for good (--retry-failed measures them again)."""
        return sum(len(h.failed) for h in self.history.values())


def resumption(run_id: str, *, db: str = DEFAULT_DB, retry_failed: bool = False, pin: bool = False) -> Resumption:
    """Read a stored run back to finish it: its configuration planned again and checked to give the same cells
    in the same order, on the same machine. `pin`: first pin this process to the run's --cpus, as
    the command line does (thread counts default to the CPUs this process may use). Raises UsageError when it
    cannot be resumed."""
    if not os.path.exists(db):
        raise UsageError(f"no database at {db}: pass the --db run {run_id} was stored in")
    with ResultStore(db) as store:
        run = store.load_run(run_id)  # an unknown id: a UsageError naming `enginebench runs`
        stored = store.cell_results(run_id)
    config = run.config
    if config.get("sweep"):
        sweep = config["sweep"]
        raise UsageError(f"run {run_id} is a part of sweep {sweep['id']}: resume the sweep with "
                         f"`enginebench sweep {sweep['file']} --db {db}`")
    argv = config.get("argv")
    if (argv is None and "run_config" not in config) or (argv or [])[:1] == ["tune"]:
        command = config.get("command") or (argv[0] if argv else "another command")
        raise UsageError(f"run {run_id} was made by `enginebench {command}`, not `enginebench run`: only a run "
                         "can be resumed")
    if None in stored:
        raise UsageError(f"run {run_id} was stored before results kept their place in the plan, so what is "
                         f"missing cannot be told: run it again with `{command_line(run)}`")
    here, there = machine_info(), run.machine
    if (there.get("hostname"), there.get("cpu")) != (here["hostname"], here["cpu"]):
        raise UsageError(f"run {run_id} was measured on {there.get('hostname')} ({there.get('cpu')}), not on "
                         f"this machine ({here['hostname']}, {here['cpu']}): resume it there, or measure anew "
                         f"here with `{command_line(run)}`")
    try:
        run_config = stored_config(run)
        if pin:
            pin_cpus(run_config.cpus)
        plan = plan_from_config(run_config)
    except UsageError as e:
        raise UsageError(f"run {run_id}'s options no longer hold here: {e}") from None
    _check_same_plan(run, plan, stored)
    history = {i: history_of(r) for i, r in stored.items() if i < len(plan.cells)}
    return Resumption(run, run_config, plan, stored, history, retry_failed)


def pin_cpus(cpus: str | None) -> None:
    """Pin this process (and the children it starts) to `cpus`, taskset syntax: 0-7 or 0,2,4."""
    if cpus:
        try:
            os.sched_setaffinity(0, parse_cpu_list(cpus))
        except (ValueError, OSError) as e:
            raise UsageError(f"--cpus {cpus!r} is not usable here ({e}): give CPUs this machine has, e.g. "
                             f"--cpus 0-{(os.cpu_count() or 1) - 1}") from None


def _check_same_plan(run: Run, plan, stored: dict) -> None:
    """The options planned again must give the run's cells in its order, each the same work as the run recorded
    (store/identity.py: the model's content, the corpus, every engine option, ...): the installed engines, the
    model or the corpus may have changed since, and its stored results and new ones would not belong together."""
    planned = plan.indexed_cells()
    launcher = LocalLauncher(plan)
    config = run.config
    if (config.get("repeat", plan.repeat) != plan.repeat or any(index >= len(planned) for index in stored)
            or config.get("cell_order") not in (None, launcher.cell_order())):
        raise UsageError(f"run {run.run_id}'s options no longer plan the same cells here (the installed engines "
                         f"changed?), so it cannot be resumed: measure anew with `{command_line(run)}`")
    # each cell as the run recorded it (its stored result, or what the run's record says of a cell still to
    # measure: the model and corpus it was started with) against the same cell planned now
    pairs = [(cell_identity(stored[index], run) if index in stored else launcher.identity(cell, config),
              launcher.identity(cell), cell) for index, cell in enumerate(planned)]
    matching = Matching([a for a, _, _ in pairs], [b for _, b, _ in pairs], names=("stored", "planned"))
    for recorded, now, cell in pairs:
        if matching.key(recorded) != matching.key(now):
            why = "; ".join(matching.differences(recorded, now, names=("then", "now")))
            raise UsageError(f"run {run.run_id}'s options no longer plan the same cells here: {cell.label()} is "
                             f"other work now ({why}), so it cannot be resumed: measure anew with "
                             f"`{command_line(run)}`")


def resume(run_id: str, *, db: str = DEFAULT_DB, retry_failed: bool = False, on_start=None,
           on_result=None) -> Run:
    """Finish a run stopped by Ctrl-C, kill -9 or a reboot, into the same run id: only the cells and
    repetitions not stored yet are measured, in the run's own order; a stored repetition is never measured
    again (nor, unless `retry_failed`, one stored as failed). Returns the whole run (as stored when it was
    complete). Raises UsageError for an unknown run, another machine's, or options that no longer hold."""
    resuming = resumption(run_id, db=db, retry_failed=retry_failed)
    if not resuming.left:
        return resuming.run
    return execute(resuming.plan, db=db, config=resuming.config, on_start=on_start, on_result=on_result,
                   resuming=resuming)


def load(run_id: str | None = None, db: str = DEFAULT_DB) -> Run:
    """A stored run (the newest when run_id is None)."""
    if not os.path.exists(db):
        raise UsageError(f"no database at {db}: run `enginebench run` first or pass db=")
    with ResultStore(db) as store:
        return store.load_run(run_id)


def _as_run(run, db: str) -> Run:
    return run if isinstance(run, Run) else load(run, db=db)


def compare(base, new, *, threshold: float = 0.05, db: str = DEFAULT_DB, seed: int = 0):
    """Compare two runs (Run objects or stored run ids) cell by cell: ratio of medians with its CI, verdicts,
    cells only in one run, machine and version differences. See analysis/compare.py."""
    return compare_runs(_as_run(base, db), _as_run(new, db), threshold=threshold, seed=seed)


def recommend(runs=None, *, db: str = DEFAULT_DB, **constraints):
    """The best configuration among stored results under constraints (model, workload, min_fidelity, objective,
    max_memory_mb, batch_size, accept_warn), with its speed-up over the default path and the command that
    reproduces it. `runs`: Run objects or run ids [every stored run of the newest run's model, or of model=]."""
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


__all__ = ["run", "resume", "load", "compare", "recommend", "execute", "resumption", "Resumption", "new_run_id",
           "command_line", "run_record", "start_run", "stored_config", "DEFAULT_DB"]
