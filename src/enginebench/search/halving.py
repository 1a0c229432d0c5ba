"""Successive halving, sized to a time budget: which candidates survive a round, what a round will cost, and
how the budget is split between the rounds.

Round 1 measures every candidate the budget can hold in short cells (one process each); each later round keeps
the faster half of the faithful ones, adds the leader's neighbours not measured yet (one setting changed: the
search climbs from the leader) and measures them twice as long, until at most FINALISTS are left and the
leader has no neighbour left to try; the final round measures them with the baselines in REPEAT_FINAL
independent processes, as long as the budget left allows. A candidate that is not faithful (fidelity below the
minimum, an fp32 result that differs from the reference, no fidelity measured) or that failed is dropped
whatever its speed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from enginebench.measure.fidelity import THRESHOLDS as FULL_PRECISION_THRESHOLDS
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.registry import scenario_class
from enginebench.search.space import Candidate, pack_runs

ETA = 2  # each round keeps 1/ETA of the candidates and measures them ETA times longer
FINALISTS = 3
REPEAT_FINAL = 3  # processes per cell in the final round: the recommendation's CI covers the processes
FIRST_RULE = StoppingRule(duration_s=0.5, min_samples=3, warmup_s=0.2)
FINAL_DURATIONS = (10.0, 5.0, 3.0, 2.0)  # the longest that fits the budget left is taken
ROUND1_SHARE = 0.4  # of the budget, at most, for round 1
FINAL_SHARE = 0.3  # of the budget, at least, kept for the final round


def round_rule(index: int) -> StoppingRule:
    """The stopping rule of round `index` (0-based) before the final: ETA times longer each round."""
    grow = ETA ** index
    return StoppingRule(duration_s=FIRST_RULE.duration_s * grow, min_samples=min(10, FIRST_RULE.min_samples * grow),
                        warmup_s=min(1.0, FIRST_RULE.warmup_s * grow))


def final_rule(duration_s: float) -> StoppingRule:
    return StoppingRule(duration_s=duration_s, min_samples=10, warmup_s=1.0)


def survivors(n: int) -> int:
    return max(1, math.ceil(n / ETA))


# -- judging ----------------------------------------------------------------------------------------------------

def figure(result, objective: str) -> float | None:
    """What a candidate is ranked on: median latency in ms (lower is better) or items/s (higher), at the
    machine's stored speed. A round's cells run minutes apart on a host whose speed moves (2-3x here), so each
    is scaled by the machine's speed beside it (Result.roofline.beside: its measuring process timed the stored
    reference GEMM before and after it): a candidate measured while the host ran at half speed is not dropped
    for it. Without a probe, the figure as measured."""
    value = ((result.latency_ms or {}).get("median") if objective == "latency"
             else (result.throughput or {}).get("items_per_s"))
    factor = ((result.roofline or {}).get("beside") or {}).get("factor")
    if value is None or not factor:
        return value
    return value * factor if objective == "latency" else value / factor


def why_dropped(result, min_fidelity: float) -> str | None:
    """Why a measured candidate cannot go on (the same rule as recommend's, without the verdict: short cells
    are noisy on purpose), or None."""
    if result is None:
        return "not measured (the budget ran out)"
    if result.status != "ok":
        return f"{result.status}: {(result.error or '').splitlines()[0][:120]}"
    f = result.fidelity or {}
    if f.get("value") is None:
        return "fidelity not measured" + (f": {f['error']}" if f.get("error") else "")
    if f["value"] < min_fidelity:
        return f"unfaithful: fidelity {f['value']:.4f} < {min_fidelity:g}"
    if not f.get("ok", False) and result.precision in FULL_PRECISION_THRESHOLDS:
        return f"unfaithful: {result.precision} differs from the reference ({f['value']:.6f})"
    return None


def rank(measured: dict[Candidate, object], objective: str, min_fidelity: float):
    """(the faithful candidates best first with their figures, {candidate: why dropped})."""
    dropped, ranked = {}, []
    for cand, result in measured.items():
        reason = why_dropped(result, min_fidelity)
        value = None if reason else figure(result, objective)
        if reason is None and value is None:
            reason = "no figure"
        if reason:
            dropped[cand] = reason
        else:
            ranked.append((cand, value))
    # ties broken by the candidate itself, so the same figures always give the same order
    ranked.sort(key=lambda cv: (cv[1] if objective == "latency" else -cv[1], cv[0]))
    return ranked, dropped


# -- what a round costs -----------------------------------------------------------------------------------------

@dataclass
class CostModel:
    """Seconds a set of cells will take: per child process (the reference's, and one per job and repetition) an
    overhead (spawn, imports), per job and repetition a load, per cell warm-up + max(duration, min_samples calls)
    (+ the workers' start-up and load in the throughput scenario). Loads and call times are learnt from the results, the
    overhead from what the wall clock shows beyond them."""

    load_s: dict = field(default_factory=dict)  # (engine, precision) -> seconds, measured
    call_s: dict = field(default_factory=dict)  # Candidate -> seconds per call, measured
    prior_load_s: float = 10.0
    # seconds per item on one thread before any call is measured (from the model's FLOPs and the machine's fp32
    # ceiling); 0: unknown. A batch of 32 MiniLM sentences takes 0.5-0.7 s on 2 cores: priced at 0, round 1 of a
    # 10-minute tune ran 4 min 29 s against 2 min 10 s planned
    prior_item_thread_s: float = 0.0
    overhead_s: float = 4.0  # per child process; learnt
    _overheads: list = field(default_factory=list)

    def load(self, c: Candidate) -> float:
        """Its measured load, else the median of the loads measured so far (else the prior)."""
        if (c.engine, c.precision) in self.load_s:
            return self.load_s[(c.engine, c.precision)]
        known = sorted(self.load_s.values())
        return known[len(known) // 2] if known else self.prior_load_s

    def call(self, c: Candidate) -> float:
        """Its measured seconds a call, else its batch at the median seconds an item took a thread among the
        candidates measured so far (else the prior): a call of `batch` items on `threads` threads."""
        if c in self.call_s:
            return self.call_s[c]
        per_item_thread = sorted(s * k.threads / k.batch_size for k, s in self.call_s.items())
        rate = per_item_thread[len(per_item_thread) // 2] if per_item_thread else self.prior_item_thread_s
        return rate * c.batch_size / max(c.threads, 1)

    def cell(self, c: Candidate, rule: StoppingRule) -> float:
        call = self.call(c)
        s = rule.warmup_s + max(rule.duration_s, rule.min_samples * call) + max(rule.min_warmup, 1) * call
        # a scenario whose workers load their own sessions starts them as processes of their own, side by side:
        # one load and one process start-up more a cell (without the start-up, the two-worker finals of 10-minute
        # searches ran past their plan and left finalists unmeasured)
        return s + (self.load(c) + self.overhead_s if scenario_class(c.scenario).workers_load_sessions else 0.0)

    def _known(self, cands: list[Candidate], rule: StoppingRule, repeat: int) -> tuple[float, int]:
        jobs = {c.job: c for c in cands}
        known = repeat * (sum(self.load(c) for c in jobs.values()) + sum(self.cell(c, rule) for c in cands))
        return known, 1 + repeat * len(jobs)

    def run(self, cands: list[Candidate], rule: StoppingRule, repeat: int = 1) -> float:
        known, processes = self._known(cands, rule, repeat)
        return known + processes * self.overhead_s

    def learn(self, cands: list[Candidate], rule: StoppingRule, repeat: int, results: dict, wall_s: float) -> None:
        """After a run: its results' load and call times, then the overhead per process the wall clock shows."""
        for c, r in results.items():
            if r is None or r.status != "ok":
                continue
            if r.load_s is not None:
                self.load_s[(c.engine, c.precision)] = max(r.load_s, 0.01)
            median_ms = (r.latency_ms or {}).get("median")
            if median_ms:
                self.call_s[c] = median_ms / 1000
        if cands and wall_s > 0:
            known, processes = self._known(cands, rule, repeat)
            self._overheads.append(max(0.1, (wall_s - known) / processes))
            self.overhead_s = sum(self._overheads) / len(self._overheads)


def fit(cands: list[Candidate], cost: CostModel, rule: StoppingRule, repeat: int, seconds: float) -> list[Candidate]:
    """The longest prefix of `cands`, whole jobs at a time, whose runs fit in `seconds`."""
    kept: list[Candidate] = []
    by_job: dict[tuple, list[Candidate]] = {}
    for c in cands:
        by_job.setdefault(c.job, []).append(c)
    for members in by_job.values():
        trial = kept + members
        if sum(cost.run(run, rule, repeat) for run in pack_runs(trial)) > seconds:
            break
        kept = trial
    return kept


@dataclass
class Round:
    """One round as planned and as it went (stored with the runs: what was tried, kept and dropped, why)."""

    index: int
    name: str  # "round 1", ..., "final"
    rule: StoppingRule
    repeat: int
    candidates: list[Candidate]
    planned_s: float
    spent_s: float = 0.0
    run_ids: list[str] = field(default_factory=list)
    ranked: list[tuple[Candidate, float]] = field(default_factory=list)
    dropped: dict[Candidate, str] = field(default_factory=dict)
    kept: list[Candidate] = field(default_factory=list)
    baselines: list[Candidate] = field(default_factory=list)
    stopped: str | None = None  # why the round ended early (the budget)
    note: str | None = None  # what else a person should know of it (round 1: what it left for last, and why)
    runs: list = field(default_factory=list, repr=False)  # the stored Runs (their run_ids are in to_dict)
    results: dict = field(default_factory=dict, repr=False)  # Candidate -> its Result, as the runs come in

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "stopping_rule": self.rule.to_dict(), "repeat": self.repeat,
                "candidates": [c.key for c in self.candidates], "baselines": [c.key for c in self.baselines],
                "planned_s": round(self.planned_s, 1), "spent_s": round(self.spent_s, 1), "run_ids": self.run_ids,
                "ranked": [[c.key, v] for c, v in self.ranked], "dropped": {c.key: why for c, why in self.dropped.items()},
                "kept": [c.key for c in self.kept], "stopped": self.stopped, "note": self.note}


__all__ = ["ETA", "FINALISTS", "REPEAT_FINAL", "CostModel", "Round", "rank", "why_dropped", "figure", "fit",
           "round_rule", "final_rule", "survivors"]
