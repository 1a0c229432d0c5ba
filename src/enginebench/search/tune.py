"""Driving the rounds: each round's candidates become one or more stored runs (enginebench.api.execute), the
results are ranked (halving.py), and the answer is `recommend`'s, from the final round's runs.

Every run of a tuning session carries `config.tune`: the session, the round, its candidates, and the whole
story so far (the candidate list in admission order and every round as planned and as it went), so
`enginebench show RUN --format json` tells what was tried."""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from enginebench.analysis.recommend import OBJECTIVES, Constraints, Recommendation, recommend
from enginebench.api import execute
from enginebench.config import RunConfig, comma_list, positive_int, seconds
from enginebench.engines import engine_class, installed_engines, require_engine
from enginebench.errors import UsageError
from enginebench.measure.compute_roofline import encoder_flops, model_structure
from enginebench.measure.peak import measured_here, run_speed
from enginebench.measure.roofline import cached_machine_speed, measure_and_cache_machine_speed
from enginebench.planning import plan_from_config
from enginebench.search import halving
from enginebench.search.halving import CostModel, Round
from enginebench.search.space import (Candidate, admission_order, baselines, candidates, follow_leaders, neighbours,
                                      pack_runs, roofline_bound)
from enginebench.store.database import ResultStore

MIN_BUDGET_S = 10.0
PRIOR_SHARE = 0.7  # of the fp32 roofline a call is priced at before any is measured (engines here: 64-81%)
# round 1 leaves for last what could not beat its leader unless the leader's short-cell figure read this many
# times too high: a candidate whose roofline bound (space.roofline_bound) is below leader / ROOFLINE_SLACK. The
# fastest rows seen reached 92-96% of their roofline, and a round-1 figure of one process can read 10-15% high.
ROOFLINE_SLACK = 1.2


class BudgetSpent(Exception):
    """Raised from the orchestrator's on_start when the next cell would not end before the deadline."""


@dataclass
class Request:
    """tune's options, checked."""

    model: str
    objective: str
    min_fidelity: float
    batch_sizes: list[int]
    workload: str
    engines: list[str] | None
    precisions: list[str] | None
    budget_s: float
    seed: int
    db: str
    argv: list[str] = field(default_factory=list)


def check_request(model=None, *, objective="throughput", min_fidelity=0.99, batch_size=None, workload=None,
                  engines=None, precisions=None, budget="20m", seed=0, db="enginebench.db") -> Request:
    """Every option checked, a one-line UsageError naming the fix for the first bad one."""
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective {objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    try:
        fidelity = float(min_fidelity)
    except (TypeError, ValueError):
        fidelity = float("nan")
    if not 0 < fidelity <= 1:
        raise UsageError(f"--min-fidelity {min_fidelity!r} must be a number above 0 and at most 1: give e.g. "
                         "--min-fidelity 0.99")
    try:
        budget_s = seconds("--budget", budget)
    except UsageError:
        raise UsageError(f"--budget {budget!r} is not a duration: give e.g. --budget 20m (units s, m, h; a bare "
                         "number is seconds)") from None
    if budget_s < MIN_BUDGET_S:
        raise UsageError(f"--budget {budget!r} is too short to measure anything: give at least "
                         f"{MIN_BUDGET_S:g}s, e.g. --budget 5m")
    default_batches = ["1"] if objective == "latency" else ["1", "8", "32"]
    batch_sizes = [positive_int("--batch-size", b) for b in comma_list(batch_size) or default_batches]
    if objective == "latency" and len(batch_sizes) > 1:
        raise UsageError("latency is per call, judged at one batch size: give one --batch-size (e.g. 1), "
                         "or --objective throughput to compare batch sizes")
    workloads = comma_list(workload) or ["corpus"]
    if len(workloads) > 1:
        raise UsageError("tune judges one workload: give one --workload (corpus or titles)")
    if not str(seed).isdigit():
        raise UsageError(f"--seed {seed!r} must be a whole number >= 0")
    if db is None:
        raise UsageError("tune stores every cell: give a database (--db FILE)")
    return Request(model or "minilm", objective, fidelity, batch_sizes, workloads[0], comma_list(engines),
                   comma_list(precisions), budget_s, int(seed), db)


@dataclass
class Tuning:
    """What a tuning session did and found."""

    request: Request
    session: str
    space: list[Candidate]
    rounds: list[Round]
    recommendation: object  # results.recommend.Recommendation (None when nothing was measured)
    elapsed_s: float
    runs: list[str]

    def lines(self) -> list[str]:
        r = self.request
        out = [f"tune: {r.model} · workload {r.workload} · objective {r.objective} · "
               f"fidelity ≥ {r.min_fidelity:g} · seed {r.seed} · {len(self.space)} candidates"]
        for rd in self.rounds:
            out.append("  " + round_line(rd, len(self.space) if rd.index == 0 else None))
        verdict = "within" if self.elapsed_s <= r.budget_s else "over"
        out.append(f"took {_clock(self.elapsed_s)} of the {_clock(r.budget_s)} budget ({verdict}); "
                   f"{len(self.runs)} runs stored in {r.db} (session {self.session})")
        if self.recommendation is not None:
            out += self.recommendation.lines()
        return out

    def to_dict(self) -> dict:
        rec = self.recommendation
        return {"session": self.session, "request": dataclasses.asdict(self.request),
                "space": [c.key for c in self.space], "rounds": [rd.to_dict() for rd in self.rounds],
                "elapsed_s": round(self.elapsed_s, 1), "runs": self.runs,
                "recommendation": rec.to_dict() if rec is not None else None}


def round_line(rd: Round, space: int | None = None) -> str:
    tried = f"{len(rd.candidates)} of {space} candidates" if space is not None else f"{len(rd.candidates)} candidates"
    if rd.baselines:
        tried += f" + {len(rd.baselines)} baselines"
    unfaithful = sum(why.startswith("unfaithful") for why in rd.dropped.values())
    other = len(rd.dropped) - unfaithful
    parts = [f"{rd.name}: {tried}", f"cells ≥{rd.rule.duration_s:g} s × {rd.repeat} process{'es' * (rd.repeat > 1)}"]
    parts += [f"{unfaithful} unfaithful"] if unfaithful else []
    parts += [f"{other} failed or unmeasured"] if other else []
    parts += [f"kept {len(rd.kept)}"] if rd.name != "final" else []
    parts += [f"{_clock(rd.spent_s)} (planned {_clock(rd.planned_s)})"]
    parts += [rd.note] if rd.note else []
    return " · ".join(parts) + (f" · stopped: {rd.stopped}" if rd.stopped else "")


def _not_tried(hopeless: list[Candidate], leader_rate: float | None) -> str | None:
    if not hopeless or leader_rate is None:
        return None
    return (f"{len(hopeless)} not tried that could not win: their roofline is under {leader_rate / ROOFLINE_SLACK:.3g} "
            f"items/s, the leader's {leader_rate:.3g} / {ROOFLINE_SLACK:g}")


def _clock(s: float) -> str:
    return f"{int(s // 60)}m{int(round(s % 60)):02d}s" if s >= 60 else f"{s:.0f}s"


class Tuner:
    """One tuning session. `measure` is the only part that measures; tests replace it (and `clock`)."""

    def __init__(self, request: Request, on_progress: Callable[[str, float, float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, on_note: Callable[[str], None] | None = None):
        self.request = request
        self.on_progress = on_progress or (lambda text, elapsed, budget: None)
        self.on_note = on_note or (lambda text: None)
        self.clock = clock
        self.session = uuid.uuid4().hex[:8]
        self.rounds: list[Round] = []
        self.run_ids: list[str] = []
        self.cost = CostModel()
        self.space: list[Candidate] = []
        self.order: list[Candidate] = []
        self.base = None  # the Plan every run's plan is made from
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.installed: Callable[[str], bool] = lambda engine: False

    # -- before measuring -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Every check, the base plan and the candidate list; nothing is measured or stored."""
        r = self.request
        for name in r.engines or []:
            require_engine(name)
        scenarios = ["latency"] if r.objective == "latency" else ["latency", "throughput"]
        config = RunConfig.from_keywords(r.model, engines=r.engines, precisions=r.precisions, workloads=[r.workload],
                                         scenarios=scenarios, batch_sizes=r.batch_sizes, seed=r.seed)
        self.base = plan_from_config(config)  # the same checks as `run`: model, precisions, workload, ...
        if self.base.model.kind != "encoder":
            raise UsageError(f"tune searches encoder configurations; {self.base.model.name} is a {self.base.model.kind}:"
                             " use `enginebench run` for decoders")
        require_engine(self.base.reference_engine)  # no reference, no fidelity: every candidate would be dropped
        engines = r.engines or sorted({c.engine for c in self.base.cells}, key=[c.engine for c in self.base.cells].index)
        installed = set(installed_engines())
        self.installed = lambda engine: engine in installed and "encoder" in engine_class(engine).model_kinds
        self.space = candidates(engines, self.base.model, r.objective, r.batch_sizes, self.cores, r.precisions)
        if not self.space:
            raise UsageError("no candidate to try: the engines given offer none of the precisions given")
        self.order = self._admission_order()
        self.cost = self._prior_costs()
        need = self.cost.run([c for c in self.order if c.job == self.order[0].job], halving.round_rule(0), 1)
        # the least a search can end with: one candidate measured, then a final round of it beside its
        # baselines in one process each at the shortest final duration (below that no recommendation is made)
        final = self._final_cost(self.order[:1], halving.final_rule(min(halving.FINAL_DURATIONS)), repeat=1)
        if need > (1 - halving.FINAL_SHARE) * r.budget_s or need + final > r.budget_s:
            raise UsageError(f"--budget {_clock(r.budget_s)} cannot hold one candidate and a final round (about "
                             f"{need:.0f} s to measure a candidate, {final:.0f} s for a final round of it with its "
                             f"baselines): give e.g. --budget {max(2, int(3 * (need + final) / 60) + 1)}m")
        ResultStore(r.db).close()  # an unwritable database fails here, before anything is measured

    def _prior_costs(self) -> CostModel:
        """Load times already stored for this model on this machine start the cost model, and a call's time is
        priced from the model's FLOPs at PRIOR_SHARE of the machine's fp32 roofline until calls are measured."""
        import socket

        cost = CostModel(prior_item_thread_s=self._prior_item_thread_s())
        if not os.path.exists(self.request.db):
            return cost
        with ResultStore(self.request.db) as store:
            rows = store.conn.execute(
                "SELECT r.engine, r.precision, r.result FROM results r JOIN runs u ON u.run_id = r.run_id "
                "WHERE r.model = ? AND r.status = 'ok' AND json_extract(u.machine, '$.hostname') = ?",
                (self.base.model.name, socket.gethostname())).fetchall()
        for engine, precision, text in rows:
            load = json.loads(text).get("load_s")
            if load is not None:
                key = (engine, precision)
                cost.load_s[key] = max(cost.load_s.get(key, 0.0), float(load))
        return cost

    def _ceilings_before_the_clock(self) -> bool:
        """Calls are priced from the machine's roofline and every run shows its share of it: ceilings this machine
        has not measured yet are measured once, before the budget's clock starts (about 30 s). Measured by the
        first run instead, they would take most of round 1's share of a short budget. True when it measured."""
        if self.cost.prior_item_thread_s or self._stored_speed() or cached_machine_speed():
            return False
        self.on_note("no roofline ceilings for this machine yet: measuring them once before the budget starts "
                     "(about 30 s; `enginebench machine` does it alone)")
        t0 = time.perf_counter()
        measure_and_cache_machine_speed()
        self.on_note(f"ceilings measured in {time.perf_counter() - t0:.0f} s; kept for every later run here")
        self.cost.prior_item_thread_s = self._prior_item_thread_s()
        return True

    def _stored_speed(self) -> dict | None:
        import socket

        if not os.path.exists(self.request.db):
            return None
        with ResultStore(self.request.db) as store:
            speed = store.machine_speed(socket.gethostname())
        return speed if measured_here(speed) else None

    def _admission_order(self) -> list[Candidate]:
        speed = run_speed(self._stored_speed() or cached_machine_speed()) or {}
        return admission_order(self.space, self.request.seed, self.cores, speed.get("gemm_gflops_by_precision"))

    def _flops_per_item(self) -> float:
        """The model's FLOPs for one item at the workload's sequence length (0 when its structure is unknown)."""
        structure = model_structure(self.base.model.path)
        seq_len = max((w.spec.seq_len for w in self.base.workloads.values()), default=0)
        return sum(encoder_flops(structure, seq_len).values()) if structure and seq_len else 0.0

    def _prior_item_thread_s(self) -> float:
        """Seconds an item takes one thread at PRIOR_SHARE of the fp32 roofline (0 when the model's structure or the
        machine's ceilings are not known)."""
        flops = self._flops_per_item()
        speed = self._stored_speed() or cached_machine_speed()
        if not flops or not speed or not speed.get("gemm_gflops"):
            return 0.0
        return flops / (speed["gemm_gflops"] * 1e9 / self.cores) / PRIOR_SHARE

    def _leader_rate(self, ranked: list[tuple[Candidate, float]]) -> float | None:
        """The leader's items/s (its figure is a latency in ms under the latency objective), None without one."""
        if not ranked:
            return None
        leader, value = ranked[0]
        return value if self.request.objective == "throughput" else leader.batch_size * 1000 / value

    def _cannot_win(self, ranked: list[tuple[Candidate, float]]) -> Callable[[Candidate], bool]:
        """Whether a candidate's roofline bound is under the leader's figure / ROOFLINE_SLACK (never, without a
        leader, the model's FLOPs or this machine's ceilings under this process's CPU features)."""
        speed = run_speed(self._stored_speed() or cached_machine_speed()) or {}
        ceilings, flops = speed.get("gemm_gflops_by_precision") or {}, self._flops_per_item()
        rate = self._leader_rate(ranked)
        if rate is None or not ceilings or not flops:
            return lambda c: False

        def cannot_win(c: Candidate) -> bool:
            bound = roofline_bound(c, ceilings, flops)
            return bound is not None and bound * ROOFLINE_SLACK < rate
        return cannot_win

    # -- the rounds -------------------------------------------------------------------------------------------
    def run(self) -> Tuning:
        r = self.request
        if self.base is None:
            self.prepare()
        if self._ceilings_before_the_clock():
            self.order = self._admission_order()  # ranked by the ceilings just measured
        self.started = self.clock()
        end = self.started + r.budget_s
        final_reserve = halving.FINAL_SHARE * r.budget_s
        rd = self._first_round(share_end=self.started + halving.ROUND1_SHARE * r.budget_s,
                               deadline=end - final_reserve)
        alive = [c for c, _ in rd.ranked]
        index = 1
        while alive:
            # each round keeps the faster half and adds the leader's neighbours not measured yet: a search that
            # climbs from the leader one setting at a time (round 1 rarely reaches past the first step)
            climb = self._climb(alive[0])
            survive = alive[:halving.survivors(len(alive))] if len(alive) > halving.FINALISTS else alive
            if len(survive) <= halving.FINALISTS and not climb:
                alive = survive
                break
            wanted = survive[:1] + climb + survive[1:]
            rule = halving.round_rule(index)
            reserve = max(final_reserve, self._final_cost(alive[:halving.FINALISTS], self._min_final_rule()))
            left = end - reserve - self.clock()
            fitted = halving.fit(wanted, self.cost, rule, 1, left)
            if len(fitted) <= halving.FINALISTS and not (set(survive) <= set(fitted) and set(climb) & set(fitted)):
                alive = alive[:halving.FINALISTS]  # no time for another round: the leaders so far go to the final
                break
            rd.kept = fitted
            rd = self._round(index, f"round {index + 1}", rule, 1, fitted, deadline=end - reserve)
            alive = [c for c, _ in rd.ranked]
            index += 1
        rd.kept = alive[:halving.FINALISTS]
        final_runs = self._final(rd.kept, end) if rd.kept else []
        rec = self._recommend(final_runs) if final_runs else None
        tuning = Tuning(r, self.session, self.order, self.rounds, rec, self.clock() - self.started, self.run_ids)
        self._annotate(recommended=rec.best and Candidate(
            rec.best.engine, rec.best.precision, rec.best.scenario, rec.best.batch_size, rec.best.workers,
            rec.best.threads, self._options_of(rec.best)).key if rec else None)
        return tuning

    def _min_final_rule(self):
        last = self.rounds[-1].rule.duration_s if self.rounds else halving.FINAL_DURATIONS[-1]
        return halving.final_rule(max(min(halving.FINAL_DURATIONS), last))

    def _final_cost(self, finalists, rule, repeat: int = halving.REPEAT_FINAL) -> float:
        cells = self._with_baselines(finalists)
        return sum(self.cost.run(run, rule, repeat) for run in pack_runs(cells))

    def _baselines(self, finalists: list[Candidate]) -> list[Candidate]:
        out = []
        for c in finalists:
            out += [b for b in baselines(c, self.installed) if b not in finalists and b not in out]
        return out

    def _with_baselines(self, finalists: list[Candidate]) -> list[Candidate]:
        """Each finalist followed by the baselines of its cell not yet listed: if the budget trims the final
        round, the leader keeps its baselines."""
        out: list[Candidate] = []
        for c in finalists:
            out += [x for x in [c, *baselines(c, self.installed)] if x not in out]
        return out

    def _final(self, finalists: list[Candidate], end: float) -> list:
        """The leaders with the baselines in their cells, in REPEAT_FINAL processes, as long as the budget allows;
        when what is left cannot hold the leader in REPEAT_FINAL processes, in as many as it holds (the round
        records how many): an answer from fewer processes beats none."""
        left = end - self.clock()
        rule, repeat = self._min_final_rule(), halving.REPEAT_FINAL
        for duration in halving.FINAL_DURATIONS:
            if duration >= rule.duration_s and self._final_cost(finalists, halving.final_rule(duration)) <= left:
                rule = halving.final_rule(duration)
                break
        while repeat > 1 and self.cost.run(finalists[:1], rule, repeat) > left:
            repeat -= 1
        rd = self._round(len(self.rounds), "final", rule, repeat, finalists, deadline=end,
                         extra=self._baselines(finalists), order=self._with_baselines(finalists))
        return rd.runs

    def _first_round(self, share_end: float, deadline: float) -> Round:
        """Round 1 takes candidates in admission order, a run at a time, while its share of the budget lasts:
        each run teaches the cost model the real load times, so the next is sized better than the priors could,
        and its measurements reorder what is left: once a family is tried, its other threadings and options
        follow the fastest families' (space.follow_leaders), and what cannot beat the leader by the roofline goes
        last (the round's note says how many were never tried for it)."""
        rule = halving.round_rule(0)
        pending = list(self.order)
        chunk_s = max(halving.ROUND1_SHARE * self.request.budget_s / 4, 1.0)

        def next_run(rd: Round) -> list[Candidate]:
            room = share_end - self.clock()
            if room <= 0 or not pending:
                return []
            ranked, dropped = self._rank(rd)
            pending[:] = follow_leaders(pending, [c for c, _ in ranked], dropped, self._cannot_win(ranked))
            members = halving.fit(pending, self.cost, rule, 1, min(room, chunk_s))
            if not members:  # one job at least while the share lasts (the round's deadline still bounds it) ...
                members = pack_runs([c for c in pending if c.job == pending[0].job])[0]
                if rd.candidates and self.cost.run(members, rule, 1) > 2 * room:
                    return []  # ... unless it would overrun the share by more than stopping now leaves unused
            members = pack_runs(members)[0]
            for c in members:
                pending.remove(c)
            rd.candidates += members
            return members

        rd = self._round(0, "round 1", rule, 1, [], deadline, next_run=next_run)
        cannot_win = self._cannot_win(rd.ranked)
        rd.note = _not_tried([c for c in pending if cannot_win(c)], self._leader_rate(rd.ranked))
        return rd

    def _climb(self, leader: Candidate) -> list[Candidate]:
        """The leader's neighbours (one setting changed) not measured in any round yet, in admission order."""
        measured = {c for rd in self.rounds for c in rd.candidates}
        return [c for c in neighbours(leader, self.order) if c not in measured]

    def _round(self, index: int, name: str, rule, repeat: int, cands: list[Candidate], deadline: float,
               extra: list[Candidate] = (), next_run=None, order: list[Candidate] | None = None) -> Round:
        """Measure a round, run by run (next_run(rd) gives each run's candidates, [] to stop; by default the
        runs `order`, else `cands` + `extra`, pack into), then rank it."""
        packed = pack_runs(order or list(cands) + list(extra))
        planned = sum(self.cost.run(run, rule, repeat) for run in packed)
        rd = Round(index, name, rule, repeat, list(cands), planned, baselines=list(extra))
        self.rounds.append(rd)
        started = self.clock()
        while True:
            members = next_run(rd) if next_run else (packed.pop(0) if packed else [])
            if not members:
                break
            left = deadline - self.clock()
            if self.cost.run(members, rule, repeat) > left:
                members = halving.fit(members, self.cost, rule, repeat, left)
                if not members:
                    rd.stopped = "the budget ran out before every run"
                    break
            if next_run:
                rd.planned_s += self.cost.run(members, rule, repeat)
            results, run, wall, stopped = self.measure(rd, members, rule, repeat, deadline)
            rd.results.update(results)
            # a run cut short says nothing of how long the whole would have taken: learn its loads only
            self.cost.learn([] if stopped else members, rule, repeat, results, 0.0 if stopped else wall)
            if run is not None:
                rd.runs.append(run)
                rd.run_ids.append(run.run_id)
                self.run_ids.append(run.run_id)
            rd.spent_s = self.clock() - started
            self._annotate()
            if stopped:
                rd.stopped = stopped
                break
        rd.spent_s = self.clock() - started
        rd.ranked, rd.dropped = self._rank(rd)
        rd.kept = [c for c, _ in rd.ranked]
        self._annotate()
        return rd

    def _rank(self, rd: Round):
        """The round's faithful candidates best first with their figures, and {candidate: why dropped}, from
        what it has measured so far."""
        return halving.rank({c: rd.results.get(c) for c in rd.candidates}, self.request.objective,
                            self.request.min_fidelity)

    # -- measuring ----------------------------------------------------------------------------------------------
    def measure(self, rd: Round, members: list[Candidate], rule, repeat: int, deadline: float):
        """Measure `members` as one stored run: ({candidate: Result or None}, Run or None, wall seconds, why it
        stopped early or None)."""
        r = self.request
        by_cell = {c.cell_key: c for c in members}
        left = max(30.0, deadline - self.clock())
        plan = dataclasses.replace(
            self.base, cells=[c.cell(r.workload) for c in members], rule=rule, repeat=repeat,
            engine_options={c.engine: dict(c.options) for c in members if c.options},
            timeout_s=min(self.base.timeout_s, left), load_timeout_s=min(self.base.load_timeout_s, left))
        done = [0]

        def on_start(cell):
            c = by_cell.get((cell.engine, cell.precision, cell.scenario, cell.batch_size, cell.workers, cell.threads))
            if c is not None and self.clock() + self.cost.cell(c, rule) > deadline:
                raise BudgetSpent(f"the budget left could not hold {c.key}")
            self._progress(f"{rd.name}: {c.key if c else cell.label()}")

        def on_result(index, result):
            done[0] += 1
            self._progress(f"{rd.name}: {done[0]} cells measured")

        with ResultStore(r.db) as store:
            before = {row[0] for row in store.run_ids()}
        started, stopped = self.clock(), None
        try:
            execute(plan, db=r.db, argv=["tune", *r.argv], on_start=on_start, on_result=on_result)
        except BudgetSpent as e:
            stopped = str(e)
        wall = self.clock() - started
        with ResultStore(r.db) as store:
            new = [row[0] for row in store.run_ids() if row[0] not in before]
            run = store.load_run(new[0]) if new else None
        results: dict[Candidate, object] = {c: None for c in members}
        for result in run.results if run else []:
            c = by_cell.get((result.engine, result.precision, result.scenario, result.batch_size, result.workers,
                             result.threads))
            if c is not None:
                results[c] = result
        if run is not None:
            run.config["tune"] = {"session": self.session, "round": rd.name, "candidates": [c.key for c in members]}
        return results, run, wall, stopped

    def _progress(self, text: str) -> None:
        self.on_progress(text, self.clock() - self.started, self.request.budget_s)

    def _annotate(self, recommended: str | None = None) -> None:
        """Write the session's story so far into every run of the session (config.tune)."""
        if not self.run_ids:
            return
        story = {"session": self.session, "objective": self.request.objective,
                 "min_fidelity": self.request.min_fidelity, "seed": self.request.seed,
                 "budget_s": self.request.budget_s, "batch_sizes": self.request.batch_sizes,
                 "workload": self.request.workload, "cores": self.cores,
                 "space": [c.key for c in self.order], "schedule": [rd.to_dict() for rd in self.rounds],
                 "recommended": recommended}
        with ResultStore(self.request.db) as store:
            for rd in self.rounds:
                for run in rd.runs:
                    run.config["tune"] = {**story, "round": rd.name, "candidates": run.config.get("tune", {}).get(
                        "candidates", [])}
                    store.conn.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                                       (json.dumps(run.config), run.run_id))
            store.conn.commit()

    # -- the answer ---------------------------------------------------------------------------------------------
    def _recommend(self, runs: list):
        r = self.request
        batch = r.batch_sizes[0] if r.objective == "latency" else None

        def judge(accept_warn: bool):
            return recommend(runs, Constraints(model=self.base.model.name, workload=r.workload,
                                               min_fidelity=r.min_fidelity, objective=r.objective, batch_size=batch,
                                               accept_warn=accept_warn))
        try:
            # warn verdicts are judged too: on a busy machine a budget's cells are noisy, and a noisy leader is
            # still the best estimate (recommend says so in a note; the CI and processes show how noisy)
            # the final round measured the leaders again in fresh processes after they were chosen: a
            # confirmation round, so the answer's figures do not carry the earlier rounds' winner's curse
            rec = dataclasses.replace(judge(True), confirmed=True)
        except UsageError as e:  # e.g. nothing of the workload measured in the final round
            rec = Recommendation(None, None, None, str(e), {})
        return rec

    @staticmethod
    def _options_of(result) -> tuple:
        import dataclasses as dc

        defaults = {f.name: f.default for f in dc.fields(engine_class(result.engine).Options)}
        return tuple(sorted((k, str(v).lower() if isinstance(v, bool) else str(v))
                            for k, v in (result.engine_options or {}).items()
                            if k != "threads" and k in defaults and v != defaults[k]))


def tune(model: str | None = None, *, on_progress=None, argv: list[str] | None = None, **options) -> Tuning:
    """Find the fastest faithful configuration of `model` within a time budget (see `enginebench tune --help`).
    Options: objective, min_fidelity, batch_size, workload, engines, precisions, budget, seed, db."""
    request = check_request(model, **options)
    request.argv = list(argv or [])
    tuner = Tuner(request, on_progress=on_progress)
    tuner.prepare()
    return tuner.run()


__all__ = ["tune", "Tuner", "Tuning", "Request", "check_request", "BudgetSpent", "round_line"]
