"""`enginebench recommend`: the best configuration among stored results, under constraints.

What is judged, and against what:
- One model, one workload, one machine. The machine is the newest given run's (hostname and CPU): figures
  from another machine are not comparable and are excluded. Several workloads need --workload.
- One piece of work: results compete only when they did the same work (store/identity.py): the model's content
  and cut (--until), seq_len, the corpus and its seed as the newest run that measured the workload did them. A
  model cut at layer 2 or a seq-64 run never competes with full 128-token runs; they are excluded, and a note
  says so (give their run ids to judge them instead).
- Only results whose status is ok, whose fidelity reaches --min-fidelity (fp32 results must also pass their
  own check against the reference: a difference there is a bug), whose peak memory is within --max-memory
  and whose verdict is ok (a warn verdict is allowed with accept_warn, and said so).
- Objective latency (encoders): the median call latency of the latency scenario, lower is better, at one
  batch size (--batch-size, else the smallest measured: latency per call grows with the batch).
- Objective throughput (encoders): items/s of both scenarios, higher is better: one session with all threads
  and N workers are both ways to deploy, so both compete; batch size is part of the configuration.
- Decoders: decode tokens/s of the tg tests, higher is better, whatever the objective.
- Speed-ups (with 95% CIs from measure/compare.py, >1 = the best is better) over the default path, PyTorch
  eager fp32 (engine `torch`) in the same scenario, batch and workers×threads, and over the
  `sentence-transformers` baseline when measured; the runner-up's gap says whether the choice is clear.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace

from enginebench.analysis.compare import compare_results
from enginebench.display import significant as _num
from enginebench.engines import engine_class
from enginebench.errors import UsageError
from enginebench.measure.compare import Ratio, closed_loop_ratio_ci
from enginebench.measure.compute_roofline import drift_words
from enginebench.measure.host_load import busy_note
from enginebench.measure.fidelity import THRESHOLDS as FULL_PRECISION_THRESHOLDS
from enginebench.models import KNOWN_MODELS
from enginebench.scenarios.registry import scenario_class, table_of
from enginebench.store.derive import pooled
from enginebench.store.identity import (
    CellIdentity,
    cell_identity,
    positions_note,
    positions_share,
    work_difference,
    work_text,
)
from enginebench.store.labels import machine_line, plus_minus, precision_label, threads_label
from enginebench.store.model import Result, Run

OBJECTIVES = ("latency", "throughput")
DEFAULT_PATH = "torch"  # PyTorch eager: what a model runs on when nobody chose an engine
BASELINES = ((DEFAULT_PATH, "the default path (PyTorch eager fp32, same cell)"),
             ("sentence-transformers", "sentence-transformers fp32 (what users run today)"))


@dataclass
class Constraints:
    model: str | None = None  # None: the newest run's model
    workload: str | None = None  # None: the one workload measured (several: an error asking for one)
    min_fidelity: float = 0.99
    objective: str = "throughput"
    max_memory_mb: float | None = None
    batch_size: int | None = None
    accept_warn: bool = False  # judge results with a warn verdict too (noisy figures), saying so

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise UsageError(f"objective {self.objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
        if not 0 < self.min_fidelity <= 1:
            raise UsageError(f"min fidelity {self.min_fidelity} must be above 0 and at most 1: "
                             "give e.g. --min-fidelity 0.99")
        if self.max_memory_mb is not None and not self.max_memory_mb > 0:
            raise UsageError(f"max memory {self.max_memory_mb} MB must be more than 0: give e.g. --max-memory 2000")
        if self.batch_size is not None and self.batch_size < 1:
            raise UsageError(f"batch size {self.batch_size} must be at least 1: give e.g. --batch-size 8")


@dataclass(frozen=True)
class Figure:
    """The figure a result is judged on."""

    name: str  # "median latency", "items/s", "decode tokens/s"
    unit: str
    value: float
    ci95: tuple[float, float] | None
    higher_is_better: bool

    def text(self) -> str:
        return f"{plus_minus(self.value, list(self.ci95) if self.ci95 else None)} {self.unit}"

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "value": self.value,
                "ci95": list(self.ci95) if self.ci95 else None, "higher_is_better": self.higher_is_better}


@dataclass
class Comparison:
    """The best against another result: speedup > 1 when the best is better (faster, or more per second)."""

    label: str
    other: Result
    run_id: str
    speedup: Ratio | None  # None when the other result is the best itself
    one_process: bool = False  # a side measured in one process: its CI covers noise within a process only
    best: Result | None = None  # what `other` is compared with

    @property
    def significant(self) -> bool:
        return bool(self.speedup and self.speedup.ci95 and not self.speedup.ci95[0] <= 1 <= self.speedup.ci95[1])

    def text(self) -> str:
        if self.speedup is None:
            return f"vs {self.label}: it is this configuration itself"
        warn = "" if self.other.verdict.get("ok") else " [its verdict: warn]"
        return (f"vs {self.label}: {ratio_text(self.speedup)}" + warn + _one_process_note(self.one_process)
                + (positions_note(self.best, self.other) if self.best else ""))

    def to_dict(self) -> dict:
        return {"label": self.label, "run_id": self.run_id, "configuration": configuration(self.other),
                "speedup": None if self.speedup is None else
                {"value": self.speedup.value, "ci95": list(self.speedup.ci95) if self.speedup.ci95 else None},
                "significant": self.significant, "one_process": self.one_process,
                # the other's token positions per input as a share of the best's (1.0: the same work)
                "positions_share": positions_share(self.best, self.other) if self.best else None}


@dataclass
class Recommendation:
    best: Result | None
    run_id: str | None
    command: str | None
    why_none: str | None
    excluded: dict[str, int]  # reason -> results
    constraints: Constraints = field(default_factory=Constraints)
    model: str | None = None
    workload: str | None = None
    machine: str = ""  # report.machine_line of the run the figures come from
    figure: Figure | None = None
    versus: list[Comparison] = field(default_factory=list)  # the default path, then sentence-transformers
    runner_up: Comparison | None = None
    runner_up_figure: Figure | None = None
    qualified: int = 0
    considered: int = 0
    notes: list[str] = field(default_factory=list)  # choices made for the user (e.g. the batch size)
    confirmed: bool = False  # the figures come from a confirmation round measured after the pick (--confirm)
    unconfirmed: str = ""  # why the pick was not measured again (the CLI's fallback: another machine, no engine)

    def lines(self, winners_curse: bool = True) -> list[str]:
        """The answer; `winners_curse=False` leaves out the line saying an unconfirmed pick flatters itself
        (for the stored answer printed before its confirmation round)."""
        c = self.constraints
        scope = [self.model or "?", f"workload {self.workload or '?'}", f"objective {_objective_text(self)}",
                 f"fidelity ≥ {c.min_fidelity:g}"]
        scope += [f"peak RSS ≤ {c.max_memory_mb:g} MB"] if c.max_memory_mb is not None else []
        scope += [f"batch {c.batch_size}"] if c.batch_size is not None else []
        out = ["recommend: " + " · ".join(scope)]
        out += [f"  note: {n}" for n in self.notes]
        if self.best is None:
            return out + [f"no recommendation: {self.why_none}"]
        b = self.best
        out.append(f"best: {configuration_text(b)}")
        out.append(f"  {self.figure.text()}{roofline_clause(b)} · {_fidelity_text(b)} · peak RSS {_memory_text(b)} · "
                   f"{_verdict_text(b)}")
        out += [f"  {v.text()}" for v in self.versus]
        if self.runner_up:
            r = self.runner_up
            clear = ("significantly better" if r.significant else "not significantly better: these results do "
                     "not tell the two apart (measure both again side by side: `enginebench recommend --confirm 5`)")
            out.append(f"  runner-up: {configuration_text(r.other, options=False)}: {self.runner_up_figure.text()}; "
                       f"the best is {ratio_text(r.speedup, better='')}, {clear}"
                       + _one_process_note(r.one_process))
        else:
            out.append("  runner-up: none (this is the only configuration that qualifies)")
        if self.runner_up and not self.confirmed and winners_curse:
            why = f" ({self.unconfirmed})" if self.unconfirmed else ""
            out.append(f"  not measured again{why}: picked as the best of the stored results, its figure is the "
                       "luckiest of theirs and flatters it (the winner's curse); `recommend --confirm 3`, what "
                       "`recommend` does where it can, measures it, the runner-up and the baselines again in fresh "
                       "interleaved processes and answers from that round")
        out.append(f"  {self.qualified} of {self.considered} results qualified" +
                   (f"; excluded: {excluded_text(self.excluded)}" if self.excluded else ""))
        out.append(f"  figures from run {self.run_id} · {self.machine}")
        out.append(f"reproduce: {self.command}")
        return out

    def to_dict(self) -> dict:
        return {
            "best": self.best.to_dict(with_samples=False) if self.best else None,
            "configuration": configuration(self.best) if self.best else None,
            "run_id": self.run_id, "command": self.command, "why_none": self.why_none,
            "excluded": dict(self.excluded), "constraints": vars(self.constraints).copy(),
            "model": self.model, "workload": self.workload, "machine": self.machine,
            "figure": self.figure.to_dict() if self.figure else None,
            "roofline": self.best.roofline if self.best else None,  # its share of the compute roofline
            "versus": [v.to_dict() for v in self.versus],
            "runner_up": self.runner_up.to_dict() if self.runner_up else None,
            "runner_up_figure": self.runner_up_figure.to_dict() if self.runner_up_figure else None,
            "qualified": self.qualified, "considered": self.considered, "notes": list(self.notes),
            "confirmed": self.confirmed, "unconfirmed": self.unconfirmed,
        }


# -- judging ------------------------------------------------------------------------------------------------

def recommend(runs: list[Run], constraints: Constraints) -> Recommendation:
    if not runs:
        raise UsageError("no runs to recommend from: run `enginebench run` first, or give run ids")
    c = constraints
    newest = _newest_run(runs, c.model)
    model = c.model or _run_model(newest)
    pairs = [(r, run) for run in runs for r in run.results]
    rec = Recommendation(None, None, None, None, {}, constraints=c, model=model, considered=len(pairs))
    decoder = any(table_of(r) == "decoders" for r, _ in pairs if r.model == model)
    machine = _judged_machine(pairs, newest, model, rec)
    in_scope = _pool_same_work(_scope(pairs, c, model, machine, decoder, rec), rec)
    qualified = [(r, run) for r, run in in_scope if _disqualify(r, c, rec.excluded) is None]
    rec.qualified = len(qualified)
    kind = _figure_kind(c, decoder)
    noisy = _noisy_leader(in_scope, c, kind)
    if not qualified:
        rec.why_none = _why_none(rec)
        if noisy:
            rec.notes.append(_noisy_text(noisy, kind))
        return rec
    qualified.sort(key=lambda pair: _figure(pair[0], kind).value, reverse=kind != "latency")
    best, best_run = qualified[0]
    if noisy and _beats(_figure(noisy, kind).value, _figure(best, kind).value, kind):
        rec.notes.append(_noisy_text(noisy, kind, best))
    rec.best, rec.run_id, rec.figure = best, best_run.run_id, _figure(best, kind)
    rec.machine = _machine_line(best, best_run)
    rec.command = reproduce_command(best, best_run)
    for engine, label in BASELINES:
        found = _baseline(engine, best, best_run, pairs, machine)
        if found:
            rec.versus.append(_compare(label, best, *found, kind))
    if len(qualified) > 1:
        runner, runner_run = qualified[1]
        rec.runner_up = _compare("runner-up", best, runner, runner_run, kind)
        rec.runner_up_figure = _figure(runner, kind)
    if best.verdict and not best.verdict.get("ok"):
        rec.notes.append("the best result's verdict is warn (accepted): its figures are noisy; "
                         + "; ".join(best.verdict.get("reasons", [])[:1]))
    return rec


def _noisy_leader(in_scope, c: Constraints, kind: str) -> Result | None:
    """The best result left out only for its warn verdict (None when warn verdicts are accepted)."""
    if c.accept_warn:
        return None
    strict_but_warn = replace(c, accept_warn=True)
    noisy = [r for r, _ in in_scope
             if r.status == "ok" and not r.verdict.get("ok") and _disqualify(r, strict_but_warn, {}) is None]
    if not noisy:
        return None
    return sorted(noisy, key=lambda r: _figure(r, kind).value, reverse=kind != "latency")[0]


def _beats(a: float, b: float, kind: str) -> bool:
    return a < b if kind == "latency" else a > b


def _noisy_text(noisy: Result, kind: str, best: Result | None = None) -> str:
    """Say loudly that a faster configuration was left out for noise alone, so the pick is not misread."""
    figure = _figure(noisy, kind)
    than = ""
    if best is not None:
        a, b = figure.value, _figure(best, kind).value
        than = f", {max(a, b) / min(a, b):.2g}× {'faster' if kind != 'latency' else 'quicker'} than the pick"
    return (f"left out for its warn verdict only: {configuration_text(noisy, options=False)} at {figure.text()}"
            f"{than}; its figures are noisy ({(noisy.verdict.get('reasons') or ['?'])[0]}): re-measure on a "
            "quieter machine, or pass --accept-warn to judge it")


def _scope(pairs, c: Constraints, model: str, machine: tuple, decoder: bool, rec: Recommendation):
    """The results of the model, workload, batch size and scenario being judged, on the machine; the others
    are counted in rec.excluded by why."""
    excluded = rec.excluded
    same = [(r, run) for r, run in pairs if r.model == model and _machine_key(r, run) == machine]
    for r, run in pairs:
        if _machine_key(r, run) != machine:
            _count(excluded, "other machine")
        elif r.model != model:
            _count(excluded, "other model")
    if decoder:
        workloads = sorted({r.workload for r, _ in same if r.workload.startswith("tg")})
    else:
        workloads = sorted({r.workload for r, _ in same})
    if c.workload is not None:
        if c.workload not in {r.workload for r, _ in same}:
            known = sorted({r.workload for r, _ in same})
            raise UsageError(f"no results of workload {c.workload!r} for {model}: use one of {', '.join(known)}")
        if decoder and not c.workload.startswith("tg"):
            raise UsageError(f"decoders are judged on tg tests (decode tokens/s), not {c.workload}: "
                             f"use one of {', '.join(workloads) or 'none measured'}")
        workload = c.workload
    elif len(workloads) == 1:
        workload = workloads[0]
    elif not workloads:
        raise UsageError(f"no tg test measured for {model}: decoders are judged on decode tokens/s; "
                         "run with --gen-len")
    else:
        raise UsageError(f"the results cover several workloads ({', '.join(workloads)}): pick one with --workload")
    rec.workload = workload
    reference, reference_run = _reference(same, workload)
    other_work = {id(r): why for r, run in same if r.workload == workload
                  and (why := work_difference(reference, cell_identity(r, run)))}
    if other_work:
        n = len(other_work)
        rec.notes.append(f"judged at {work_text(reference)} (run {reference_run.run_id}, the newest that measured "
                         f"{workload}); {n} result{'s' * (n > 1)} of other work left out ("
                         f"{', '.join(sorted(set(other_work.values())))}): give their run ids to judge them")
    same = [(r, run) for r, run in same if id(r) not in other_work or r.workload != workload]
    batch = c.batch_size
    latency = c.objective == "latency" and not decoder
    if batch is None and latency:
        sizes = sorted({r.batch_size for r, _ in same
                        if r.workload == workload and scenario_class(r.scenario).per_call_latency})
        if sizes:
            batch = sizes[0]
            if len(sizes) > 1:
                rec.notes.append(f"latency is per call: judged at batch {batch}, the smallest measured "
                                 f"(of {', '.join(map(str, sizes))}); pass --batch-size for another")
    if batch is not None and not any(r.batch_size == batch for r, _ in same if r.workload == workload):
        known = sorted({r.batch_size for r, _ in same if r.workload == workload})
        raise UsageError(f"no results at batch size {batch} for {workload}: use one of {', '.join(map(str, known))}")
    kept = []
    for why in other_work.values():
        _count(excluded, why)
    for r, run in same:
        if r.workload != workload:
            _count(excluded, "pp test (decoders are judged on tg tests)" if decoder and r.workload.startswith("pp")
                   else "other workload")
        elif batch is not None and r.batch_size != batch:
            _count(excluded, "other batch size")
        elif scenario_class(r.scenario).unranked_because:
            _count(excluded, scenario_class(r.scenario).unranked_because)
        elif latency and not scenario_class(r.scenario).per_call_latency:
            _count(excluded, f"{r.scenario} scenario (the latency objective judges the latency scenario)")
        else:
            kept.append((r, run))
    return kept


def _pool_same_work(pairs: list[tuple[Result, Run]], rec: Recommendation) -> list[tuple[Result, Run]]:
    """One candidate per work: results of the same cell identity (several runs of one configuration) are pooled
    into one result over all their processes, attributed to the newest run, so that five runs of a configuration
    are not five chances to draw a lucky figure. Results that cannot be pooled (stored before schema 4) leave
    the newest of their work to compete."""
    groups: dict[str, list[tuple[Result, Run]]] = {}
    for r, run in pairs:
        groups.setdefault(cell_identity(r, run).text() + r.status, []).append((r, run))
    out, merged = [], 0
    for members in groups.values():
        members.sort(key=lambda pair: pair[1].created_at)
        if len(members) == 1 or members[0][0].status != "ok":  # a failed cell has nothing to pool
            out.extend(members)
            continue
        together = pooled([r for r, _ in members])
        out.append((together, members[-1][1]) if together is not None else members[-1])
        merged += len(members) - 1
    if merged:
        n = len(out)
        rec.notes.append(f"results of the same work in several runs are pooled over all their processes "
                         f"({len(pairs)} results, {n} configuration{'s' * (n > 1)}): a configuration measured "
                         "often does not get more chances to draw a lucky figure")
    return out


def _reference(same, workload: str) -> tuple[CellIdentity, Run]:
    """The identity of the work judged: the newest run's that measured `workload` (its first such result)."""
    r, run = max(((r, run) for r, run in same if r.workload == workload), key=lambda pair: pair[1].created_at)
    return cell_identity(r, run), run


def _disqualify(r: Result, c: Constraints, excluded: dict[str, int]) -> str | None:
    """Why `r` cannot be recommended (counted in `excluded`), or None."""
    reason = None
    f = r.fidelity or {}
    if r.status != "ok":
        reason = r.status  # failed or skipped
    elif f.get("value") is None:
        reason = "fidelity not measured"
    elif f["value"] < c.min_fidelity:
        reason = "fidelity below min"
    elif not f.get("ok", False) and r.precision in FULL_PRECISION_THRESHOLDS:
        # --min-fidelity replaces the reduced-precision default (0.99), but full precision that differs from
        # the reference is a bug, whatever the user tolerates
        reason = "fidelity check failed (full precision differs from the reference)"
    elif c.max_memory_mb is not None and r.peak_rss_mb is None:
        reason = "memory not measured"
    elif c.max_memory_mb is not None and r.peak_rss_mb > c.max_memory_mb:
        reason = "memory above max"
    elif not r.verdict.get("ok") and not c.accept_warn:
        reason = "warn verdict"
    if reason:
        _count(excluded, reason)
    return reason


_HINTS = {
    "warn verdict": "re-measure longer (--duration) on a quieter machine, or pass --accept-warn to judge noisy figures",
    "fidelity below min": "lower --min-fidelity if that loss of accuracy is acceptable",
    "memory above max": "raise --max-memory, or measure fewer workers",
    "failed": "see the errors with `enginebench show`",
}


def _why_none(rec: Recommendation) -> str:
    text = f"none of the {rec.considered} results qualifies"
    if rec.excluded:
        text += f" ({excluded_text(rec.excluded)})"
    hints = [h for reason, h in _HINTS.items() if reason in rec.excluded]
    return text + (": " + "; ".join(hints) if hints else "")


def _count(excluded: dict[str, int], reason: str) -> None:
    excluded[reason] = excluded.get(reason, 0) + 1


def excluded_text(excluded: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items(), key=lambda kv: -kv[1]))


# -- figures and ratios ---------------------------------------------------------------------------------------

def _figure_kind(c: Constraints, decoder: bool) -> str:
    return "tokens" if decoder else ("latency" if c.objective == "latency" else "items")


def _figure(r: Result, kind: str) -> Figure:
    if kind == "latency":
        return Figure("median latency", "ms", r.latency_ms["median"], _ci(r.latency_ms.get("ci95")), False)
    if kind == "items":
        return Figure("items/s", "items/s", r.throughput["items_per_s"], _ci(r.throughput.get("ci95")), True)
    tps = r.decode_tokens_per_s or {}
    return Figure("decode tokens/s", "tokens/s", tps.get("median", 0.0), _ci(tps.get("ci95")), True)


def _ci(ci) -> tuple[float, float] | None:
    return (float(ci[0]), float(ci[1])) if ci else None


def speedup(base: Result, new: Result, kind: str) -> Ratio:
    """How much better `new` is than `base` on the figure `kind`, > 1 when better, with its 95% CI:
    analysis/compare.py's judgement, except for items/s of the latency scenario, which it judges on latency."""
    if kind == "items" and any(scenario_class(r.scenario).per_call_latency for r in (base, new)):
        (base_processes, base_items), (new_processes, new_items) = _closed_loop(base), _closed_loop(new)
        return closed_loop_ratio_ci(base_processes, new_processes, base_items, new_items)
    return compare_results(base, new).speedup


def _closed_loop(r: Result) -> tuple[list, float]:
    """(each process's workers' samples, items per call); results stored before repetitions kept their
    workers' samples pooled: one worker of workers × batch items per call."""
    if r.repetitions:
        return [rep.get("worker_samples", []) for rep in r.repetitions], float(r.batch_size)
    return [[list(r.samples)]], float(r.batch_size * r.workers)


def _compare(label: str, best: Result, other: Result, other_run: Run, kind: str) -> Comparison:
    if other is best:
        return Comparison(label, other, other_run.run_id, None, best=best)
    one = min(len(best.process_samples()), len(other.process_samples())) < 2
    return Comparison(label, other, other_run.run_id, speedup(other, best, kind), one, best=best)


def ratio_text(ratio: Ratio, better: str = "faster") -> str:
    value = f"{_num(ratio.value)}×"
    if ratio.ci95 is None:
        return f"{value} (no CI: one sample)"
    ci = f"95% CI {_num(ratio.ci95[0])}–{_num(ratio.ci95[1])}×"
    if not better:
        return f"{value} ({ci})"
    if ratio.ci95[0] > 1:
        return f"{value} {better} ({ci})"
    if ratio.ci95[1] < 1:
        return f"{value}, i.e. worse ({ci})"
    return f"{value} ({ci}): no significant difference"


def _one_process_note(one: bool) -> str:
    return " [one process: the CI covers noise within a process only]" if one else ""


def _baseline(engine: str, best: Result, best_run: Run, pairs, machine: tuple):
    """(result, run) of `engine` fp32 in the best's cell (scenario, workload, batch, workers×threads), ok, on
    the machine: from the best's own run when it has one, else the newest."""
    if best.engine == engine and best.precision == "fp32":
        return best, best_run
    work = cell_identity(best, best_run)
    matches = [(r, run) for r, run in pairs
               if r.engine == engine and r.precision == "fp32" and r.status == "ok" and _machine_key(r, run) == machine
               and (r.model, r.scenario, r.workload, r.batch_size, r.workers, r.threads, r.settings)
               == (best.model, best.scenario, best.workload, best.batch_size, best.workers, best.threads,
                   best.settings)
               and work_difference(work, cell_identity(r, run)) is None]
    if not matches:
        return None
    return max(matches, key=lambda pair: (pair[1] is best_run, pair[1].created_at))


# -- describing a configuration -------------------------------------------------------------------------------

def _options(r: Result) -> dict:
    return {k: v for k, v in (r.engine_options or {}).items() if k != "threads"}


def configuration(r: Result) -> dict:
    return {"engine": r.engine, "precision": precision_label(r), "scenario": r.scenario, "workload": r.workload,
            "seq_len": r.seq_len, "batch_size": r.batch_size, "workers_x_threads": threads_label(r),
            "options": _options(r)}


def configuration_text(r: Result, options: bool = True) -> str:
    c = configuration(r)
    given = ", ".join(f"{k}={_option_text(v)}" for k, v in c["options"].items())
    return " · ".join([r.engine, c["precision"], f"{r.scenario} scenario", f"batch {r.batch_size}",
                       f"{c['workers_x_threads']} workers×threads"] + ([f"options {given}"] if options and given else []))


def roofline_clause(r: Result) -> str:
    """`, 54% of this machine's int8 roofline (95% CI 53-56%; the roofline 94/s)`, named by the precision holding
    most of its FLOPs; `` when unknown."""
    figure = r.roofline or {}
    if figure.get("pct_of_roofline") is None:
        return ""
    emulated = " (emulated)" if figure["precision"] in (figure.get("emulated") or ()) else ""
    ci = figure.get("ci95")
    interval = f"95% CI {ci[0]:.0f}-{ci[1]:.0f}%; " if ci else ""
    beside = figure.get("beside") or {}
    drift = ""
    if beside.get("drifted"):
        speed, share = drift_words(beside)
        drift = f"; {speed} beside it: {share} of the roofline at that speed"
    if busy := busy_note({"others_cores": figure.get("ceilings_busy_cores")}):
        drift += f"; may read high: {busy}"
    return (f", {figure['pct_of_roofline']:.0f}% of this machine's {figure['precision']}{emulated} roofline "
            f"({interval}the roofline {figure['roofline_items_per_s']:.0f}/s{drift})")


def _fidelity_text(r: Result) -> str:
    f = r.fidelity or {}
    if f.get("reference"):
        return "fidelity: the reference"
    metric = {"min_cosine": "min cosine", "top1_agreement": "top-1 agreement"}.get(f.get("metric"), f.get("metric"))
    return f"fidelity {f['value']:.6f} {metric}"


def _memory_text(r: Result) -> str:
    return f"{r.peak_rss_mb:,.0f} MB" if r.peak_rss_mb is not None else "not measured"


def _verdict_text(r: Result) -> str:
    if r.verdict.get("ok"):
        return "verdict ok"
    n = len(r.verdict.get("reasons", []))
    return f"verdict warn ({n} reason{'' if n == 1 else 's'})"


def _objective_text(rec: Recommendation) -> str:
    if (rec.workload or "").startswith("tg"):  # decoders are judged on their tg tests
        return "decode tokens/s (decoders), higher is better"
    if rec.constraints.objective == "latency":
        return "latency: median ms per call of the latency scenario, lower is better"
    return "throughput: items/s of either scenario, higher is better"


# -- runs and machines ------------------------------------------------------------------------------------

def _run_model(run: Run) -> str:
    if run.results:
        return run.results[0].model
    return (run.config.get("model") or {}).get("name", "?")


def _newest_run(runs: list[Run], model: str | None) -> Run:
    """The newest run (of `model`, when given): its machine is the one the figures must come from."""
    candidates = [run for run in runs if model is None or any(r.model == model for r in run.results)]
    if not candidates:
        known = sorted({r.model for run in runs for r in run.results})
        raise UsageError(f"no results of model {model!r} in the runs given: use one of {', '.join(known) or 'none'}")
    return max(candidates, key=lambda run: run.created_at)


def machine_of(r: Result, run: Run) -> dict:
    """The machine that measured `r`: its Ray node's when a node did (details.node), else the run's."""
    return (r.details or {}).get("node") or run.machine or {}


def _machine_key(r: Result, run: Run) -> tuple:
    m = machine_of(r, run)
    return m.get("hostname"), m.get("cpu")


def _judged_machine(pairs, newest: Run, model: str, rec: "Recommendation") -> tuple:
    """Figures from two machines never compete: the machine judged is the one that measured most of the newest
    run's results of the model (a Ray run may have measured on several); a note names the others."""
    counts: dict[tuple, int] = {}
    for r in newest.results:
        if r.model == model:
            key = _machine_key(r, newest)
            counts[key] = counts.get(key, 0) + 1
    own = newest.machine or {}
    machine = max(counts, key=counts.get) if counts else (own.get("hostname"), own.get("cpu"))
    others = sorted({str(_machine_key(r, run)[0]) for r, run in pairs
                     if r.model == model and _machine_key(r, run) != machine})
    if others:
        rec.notes.append(f"judged on machine {machine[0]} ({machine[1]}); results measured on {', '.join(others)} "
                         "are left out: figures from different machines never compete (give those runs alone to "
                         "judge them)")
    return machine


def _machine_line(r: Result, run: Run) -> str:
    return machine_line(replace(run, machine=machine_of(r, run))).removeprefix("machine: ")


# -- the command that reproduces a result -------------------------------------------------------------------

def _duration(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if 0 < seconds < 1 else f"{seconds:g}s"


def _option_text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _argv_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` in a stored argv (`--flag VALUE` or `--flag=VALUE`), else None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _engine_defaults(engine: str) -> dict:
    import dataclasses

    try:
        return {f.name: f.default for f in dataclasses.fields(engine_class(engine).Options)}
    except Exception:  # an engine this installation does not know: every option is written out
        return {}


def reproduce_command(r: Result, run: Run) -> str:
    """`enginebench run …` measuring exactly this result's configuration, with the stopping rule, repetitions
    and workload of the run it came from. Engine options are written where they differ from the engine's
    defaults."""
    config = run.config or {}
    argv = [a for a in config.get("argv", []) if a != "run"]
    model = config.get("model") or {}
    llm_config = _argv_value(argv, "--llm-config")
    out = ["enginebench", "run"]
    if llm_config:
        out += ["--llm-config", llm_config]
    else:
        out += ["--model", r.model if r.model in KNOWN_MODELS else (model.get("path") or r.model)]
    out += ["--engine", r.engine, "--precision", r.precision, "--scenario", r.scenario]
    out += scenario_class(r.scenario).reproduce_args(r, _argv_value(argv, "--corpus"))
    seed = config.get("order_seed")  # --seed: the workload's sampling and the cells' order
    if seed:
        out += ["--seed", str(seed)]
    defaults = _engine_defaults(r.engine)
    for key, value in _options(r).items():
        if key not in defaults or defaults[key] != value:
            out += ["-o", f"{r.engine}.{key}={_option_text(value)}"]
    rule = config.get("stopping_rule") or {}
    if rule:
        out += ["--duration", _duration(rule["duration_s"]), "--min-samples", str(rule["min_samples"]),
                "--warmup", _duration(rule["warmup_s"])]
    out += ["--repeat", str(config.get("repeat", len(r.repetitions) or 1))]
    for flag in ("--cpus", "--until"):
        value = _argv_value(argv, flag) or (model.get("until") if flag == "--until" else None)
        out += [flag, value] if value else []
    return " ".join(shlex.quote(a) for a in out)


__all__ = ["Constraints", "Recommendation", "Comparison", "Figure", "recommend", "reproduce_command", "speedup",
           "configuration", "machine_of", "OBJECTIVES"]


def load_runs(store, run_ids: list[str], model: str | None) -> list:
    """The runs named, else every stored run of `model` (the newest run's model when None)."""
    if run_ids:
        return [store.load_run(run_id) for run_id in run_ids]
    overviews = store.run_overviews()  # newest first
    if not overviews:
        raise UsageError(f"no runs in {store.path}: run `enginebench run` first")
    if model is None:
        model = next((o.models[0] for o in overviews if o.models), None)
    chosen = [o.run_id for o in overviews if model in o.models]
    if not chosen:
        known = sorted({m for o in overviews for m in o.models})
        raise UsageError(f"no stored results of model {model!r} in {store.path}: use one of {', '.join(known)}")
    return [store.load_run(run_id) for run_id in chosen]
