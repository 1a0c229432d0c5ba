"""What a sweep will do, before it does it: its cells with their state in the store, and the time left.

Time left = Σ over the (cell, repetition) pairs still to measure of (warm-up + duration), plus a model load
per child process (one per job — engine × precision × threads — and repetition, one per throughput cell
whose workers load their own) and one fidelity reference per part. A load costs the median load time this
database holds for that engine and model, else DEFAULT_LOAD_S. A cell also costs what this database saw the
same engine, precision and model spend beyond its loads, warm-ups and durations (fidelity checks, compiles of
new shapes, generations or calls longer than duration ÷ min-samples): the median over stored job repetitions
of (their wall time - load - Σ warm-up + duration) per cell. Without such a record a cell is counted at its
warm-up + duration, which a first decoder run can exceed many times over.
"""

from __future__ import annotations

from dataclasses import dataclass

from enginebench.scenarios.registry import scenario_class
from enginebench.sweep.runner import PartState

DEFAULT_LOAD_S = 10.0  # a model load (with conversion) nothing stored tells us about


@dataclass
class Estimate:
    cells: int = 0
    to_measure: int = 0  # (cell, repetition) pairs
    measure_s: float = 0.0
    load_s: float = 0.0
    loads: int = 0
    extra_s: float = 0.0  # beyond warm-ups, durations and loads, as stored runs of the same jobs took

    @property
    def total_s(self) -> float:
        return self.measure_s + self.load_s + self.extra_s


def stored_load_times(store) -> dict[tuple[str, str], float]:
    """(engine, model) -> median load time, s, over the ok results stored."""
    import statistics

    times: dict[tuple[str, str], list[float]] = {}
    for engine, model, load_s in store.conn.execute(
            "SELECT engine, model, json_extract(result, '$.load_s') FROM results WHERE status = 'ok'"):
        if load_s is not None:
            times.setdefault((engine, model), []).append(float(load_s))
    return {k: statistics.median(v) for k, v in times.items()}


def stored_cell_extras(store, models: list[str] | None = None) -> dict[tuple[str, str, str, bool], float]:
    """(engine, model, precision, measured fidelity) -> median seconds a cell took beyond its warm-up + duration
    and its job's load, over the job repetitions stored (a job: one run's cells of one engine, precision and
    thread count) of `models` (None: every model). A job repetition whose processes reused their cells'
    fidelity (details.fidelity_reused) counts apart from one that measured it, as every process did before
    2026-12-06: for a 7B decoder the fidelity pass can take several times the rest."""
    import json
    import statistics

    query, args = "SELECT run_id, engine, model, precision, result FROM results WHERE status = 'ok'", ()
    if models is not None:
        query += f" AND model IN ({', '.join('?' * len(models))})"
        args = tuple(models)
    jobs: dict[tuple, dict[int, list]] = {}
    for run_id, engine, model, precision, text in store.conn.execute(query, args):
        r = json.loads(text)
        rule = (r.get("details") or {}).get("stopping_rule") or {}
        budget = float(rule.get("warmup_s", 0.0)) + float(rule.get("duration_s", 0.0))
        for index, rep in enumerate(r.get("repetitions") or []):
            details = (rep.get("measurement") or {}).get("details") or {}
            span = details.get("measured_between")
            if span and len(span) == 2:
                cells = jobs.setdefault((run_id, engine, model, precision, r.get("threads")), {})
                cells.setdefault(index, []).append((span[0], span[1], budget, rep.get("load_s") or 0.0,
                                                    bool(details.get("fidelity_reused"))))
    extras: dict[tuple[str, str, str, bool], list[float]] = {}
    for (_, engine, model, precision, _), repetitions in jobs.items():
        for cells in repetitions.values():
            starts, ends, budgets, loads, reused = zip(*cells)
            extra = max(ends) - min(starts) - max(loads) - sum(budgets)
            measured_fidelity = not all(reused)
            extras.setdefault((engine, model, precision, measured_fidelity), []).append(max(0.0, extra) / len(cells))
    return {k: statistics.median(v) for k, v in extras.items()}


def estimate(states: list[PartState], load_times: dict[tuple[str, str], float],
             extras: dict[tuple[str, str, str, bool], float] | None = None) -> Estimate:
    est = Estimate()
    for state in states:
        est.cells += len(state.keys)
        add_plan(est, state.part.plan, state.launcher, load_times, extras)
    return est


def add_plan(est: Estimate, plan, launcher, load_times: dict[tuple[str, str], float],
             extras: dict[tuple[str, str, str, bool], float] | None = None) -> set[str]:
    """Add what `launcher` has left of `plan` to `est`; returns the engines whose load time nothing stored
    tells (counted at DEFAULT_LOAD_S; a first load may convert or compile the model for minutes)."""
    per_cell = plan.rule.warmup_s + plan.rule.duration_s
    extras = extras or {}
    unknown: set[str] = set()

    def load(engine: str, measured: bool = True) -> float:
        if measured and (engine, plan.model.name) not in load_times:
            unknown.add(engine)
        return load_times.get((engine, plan.model.name), DEFAULT_LOAD_S)

    left = 0
    planned: set[int] = set()  # cells whose fidelity an earlier job of the schedule measures
    for jobs in launcher.schedule():
        for job in jobs:
            est.loads += 1
            est.load_s += load(job.engine)
            known = launcher.known_fidelity(job) if launcher.reuses_fidelity else {}
            for index, cell in job.cells:
                left += 1
                est.measure_s += per_cell
                measures = not launcher.reuses_fidelity or (index not in known and index not in planned)
                planned.add(index)
                key = (job.engine, plan.model.name, job.precision)
                est.extra_s += extras.get((*key, measures), extras.get((*key, not measures), 0.0))
                if scenario_class(cell.scenario).workers_load_sessions:  # each worker loads its own
                    est.loads += 1
                    est.load_s += load(job.engine)
    if left:
        est.loads += 1
        est.load_s += load(plan.reference_engine, measured=False)
    est.to_measure += left
    return unknown


def expected(plan, launcher, store) -> tuple[str, float]:
    """What a run expects to take, said before it starts, and the estimate in seconds."""
    est = Estimate()
    unknown = add_plan(est, plan, launcher, stored_load_times(store), stored_cell_extras(store, [plan.model.name]))
    line = (f"expected: about {duration_text(est.total_s)} ({_count(est.to_measure, 'measurement')} of "
            f"{plan.rule.warmup_s + plan.rule.duration_s:g} s, {_count(est.loads, 'model load')}")
    if est.extra_s >= 1:
        line += (f", {duration_text(est.extra_s)} of fidelity checks, compiles and calls beyond the duration, as "
                 "stored runs of these engines took")
    if unknown:
        line += (f"; never loaded with this database: {', '.join(sorted(unknown))}, counted at "
                 f"{DEFAULT_LOAD_S:g} s each, though a first load may export, convert or compile the model for "
                 "minutes (cached after)")
    return line + ")", est.total_s


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min {seconds % 60:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


__all__ = ["Estimate", "estimate", "stored_load_times", "stored_cell_extras", "duration_text", "DEFAULT_LOAD_S"]
