"""Two Results, or two Runs cell by cell, compared with significance: the ratio of their figures with its 95% CI
(measure/compare.py), a verdict with its reasons, and everything else that differs between the runs — machine,
versions, how they measured — said first and loudly, as pyperf does before it mixes runs.

Which figure a cell is judged on follows its scenario: latency → the median call latency (lower is better);
throughput → closed-loop items/s (higher); generate → prefill tokens/s for pp tests, decode tokens/s for tg
tests (higher), or the median time to first token where a pp test was timed as one (lower).

The verdict and the regression gate: `new` is "slower" only when the whole 95% CI of its slowdown lies beyond the
threshold — when it is slower by more than the threshold with 95% confidence — and "faster" likewise; a change
whose CI excludes 1 but reaches inside the threshold is "no significant change", with a reason saying so. A gate
built on that does not flap on noise: a true slowdown of exactly the threshold fails it at most 2.5% of the time;
the slowdown it reliably catches is the threshold plus the CI's half-width (a few % with 3 processes a cell).
On synthetic cells shaped like the default stopping rule (tests/measure/test_compare.py), two draws of one distribution
never failed the 5% gate in 400 seeded trials, and at threshold 0% were called different in 4-5% of them.
Slowdown and speed-up are in time: 5% slower means the new takes 1.05× the time per call (or gives 1/1.05 the
items/s), 5% faster that it takes 1/1.05 of it.

The threshold is the noise floor (5% by default): two runs minutes or days apart differ by machine drift that
the spread within a run does not see, so a change smaller than it is never called, however narrow its CI.

Many cells, one comparison: at 95% a cell each, 200 unchanged cells at threshold 0% call 3-5% of them changed,
so nearly every such comparison calls some cell changed (tests/measure/test_compare.py: 10 of 10). compare_runs judges the cells of one comparison as one family with Holm's step-down correction: with
m cells a CI, a cell is called changed only when its interval at confidence 1 - 0.05/k lies beyond the
threshold, k = m at the first step and one less for each cell called at an earlier step — the family-wise
confidence stays 95% (the chance that any unchanged cell is called changed is at most 5%; simulated with 200
unchanged cells a comparison: 0 of 40 comparisons, 1 of 100). The price is power, as the intervals widen with
the number of cells and with few degrees of freedom (3 processes a side): among 200 cells a 30% slowdown is
caught in 3 of 4 comparisons with 3 processes a cell, always with 5 (and 10% in 95%); among 20 cells, 20% in
95% with 3. `correction="none"` judges each cell at 95%.

The machine beside each cell: an encoder cell's processes time numpy's GEMM before and after it
(measure/roofline.gemm_probe). Where the two runs' probes differ by more than the threshold (at least
PROBE_RESOLUTION, the probe's own run-to-run noise on a quiet machine), the machine itself ran at another speed
during one run, which the spread within a run cannot see; the cell says so, with both speeds, and so does the
gate's line when such a cell is called changed. The verdict stays what was measured: the change is real for the
machine as it was, and whether the engine or the machine made it is what measuring again decides.

The gate (`--fail-on regression`) fails on a slower cell and on every cell the base measured (ok) that the new
run cannot vouch for, each of a kind (GATE_KINDS) the user may allow: missing from the new run, failed, skipped,
fidelity (ok in base, not ok or unchecked in new) and no-ci (no interval to judge it by). Outputs list them first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from enginebench.measure.compare import Ratio, Side, bootstrap_side, closed_loop_side, side_ratio
from enginebench.measure.compute_roofline import DRIFT
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.registry import scenario_class
from enginebench.store.identity import Matching, cell_identity, positions_differ
from enginebench.store.model import Result, Run

GATE_KINDS = ("missing", "failed", "skipped", "fidelity", "no-ci")  # besides "slower": what fails the gate
CORRECTIONS = ("holm", "none")
FAMILY_CONFIDENCE = 0.95
MATCH_KEYS = ("engine", "model", "precision", "scenario", "workload", "batch_size", "threads", "workers")  # shown
# cells are matched on their whole identity (store/identity.py); a cell left unmatched is paired, to say what
# differs, with one the other run measured that agrees on these
_NEAR_KEYS = ("engine", "precision", "scenario", "workload", "batch_size", "threads", "workers")
PROBE_RESOLUTION = 0.05  # two quiet runs' GEMM probes (medians of 6) differed by up to 3% here
ONE_PROCESS_NOTE = ("one process per cell: its CIs cover within-process variance only (independent processes "
                    "often differ by 1-2%, which such a CI does not include); measure with --repeat 3")


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher_is_better: bool
    figure: str  # the Result field holding the stored figure and its CI


LATENCY = Metric("median latency", "ms", False, "latency_ms")
THROUGHPUT = Metric("throughput", "items/s", True, "throughput")
PREFILL = Metric("prefill tokens/s", "tokens/s", True, "prefill_tokens_per_s")
DECODE = Metric("decode tokens/s", "tokens/s", True, "decode_tokens_per_s")
TTFT = Metric("median time to first token", "ms", False, "ttft_ms")


def metric_of(r: Result) -> Metric:
    """The figure a result is judged on (see the module's docstring)."""
    judged_on = scenario_class(r.scenario).judged_on
    if judged_on == "throughput":
        return THROUGHPUT
    if judged_on == "tokens":
        if r.prefill_tokens_per_s:
            return PREFILL
        if r.decode_tokens_per_s:
            return DECODE
        return TTFT  # a pp test timed through a one-token generation
    return LATENCY


def cell_of(r: Result) -> dict:
    cell = {key: getattr(r, key) for key in MATCH_KEYS}
    cell["seq_len"] = r.seq_len
    if r.settings:  # a scenario's own settings are part of the cell (results without them keep their shape)
        cell["settings"] = r.settings
    return cell


@dataclass
class CellComparison:
    cell: dict  # the matching parameters: engine, model, precision, scenario, workload, batch_size, threads, workers
    metric: str  # "median latency", "throughput", "decode tokens/s", "prefill tokens/s", ...
    unit: str  # "ms", "items/s", "tokens/s"
    higher_is_better: bool
    base: float
    new: float
    ratio: Ratio  # new/base of the metric
    speedup: Ratio  # > 1 means `new` is faster (ratio, or its inverse for latencies), with its 95% CI
    verdict: str  # "faster" | "slower" | "no significant change"
    reasons: list[str]
    processes: tuple[int, int]
    base_ci: tuple[float, float] | None = None  # the stored figures' own CIs, for display
    new_ci: tuple[float, float] | None = None
    threshold: float = 0.0
    warnings: dict = field(default_factory=dict)  # {"base": [...], "new": [...]}: the results' verdict reasons
    confidence: float = FAMILY_CONFIDENCE  # of the interval the verdict stands on (above 95% under Holm's correction)
    decision: Ratio | None = None  # the speed-up's interval at `confidence` (None: `speedup`'s own)
    sides: tuple[Side, Side] | None = field(default=None, repr=False, compare=False)
    tokens_scale: float = field(default=1.0, repr=False, compare=False)  # tokens per call, new / base
    machine: dict | None = None  # machine_beside(): how fast the machine ran beside each side's cell

    @property
    def machine_moved(self) -> bool:
        return bool(self.machine and (self.machine["moved"] or self.machine["unsteady"]))

    def interval_at(self, confidence: float) -> Ratio:
        """The speed-up with its interval at another confidence (Holm's correction asks for more than 95%)."""
        if self.sides is None:
            raise ValueError("this comparison kept no sides to widen its interval from")
        return _speedup(self.sides, self.metric, self.higher_is_better, self.tokens_scale, confidence)[1]

    def slower_beyond(self, threshold: float) -> bool:
        """Slower by more than `threshold` (0.05 = 5%) at the verdict's confidence: the whole interval beyond it."""
        ci = (self.decision or self.speedup).ci95
        return ci is not None and ci[1] < 1 / (1 + threshold)

    def change(self) -> str:
        """`5.3% faster`, `4.8% slower` (in time per call), or `no change`."""
        return change_text(self.speedup.value)

    def to_dict(self) -> dict:
        return {
            "cell": self.cell, "metric": self.metric, "unit": self.unit, "higher_is_better": self.higher_is_better,
            "base": self.base, "new": self.new, "base_ci95": _list(self.base_ci), "new_ci95": _list(self.new_ci),
            "ratio": {"value": self.ratio.value, "ci95": _list(self.ratio.ci95)},
            "speedup": {"value": self.speedup.value, "ci95": _list(self.speedup.ci95)},
            "change": self.change(), "verdict": self.verdict, "reasons": self.reasons,
            "verdict_confidence": self.confidence, "verdict_ci": _list((self.decision or self.speedup).ci95),
            "processes": list(self.processes), "threshold": self.threshold, "warnings": self.warnings,
            "machine": self.machine,
        }


@dataclass(frozen=True)
class GateIssue:
    """A cell the base measured that the new run cannot vouch for: a regression of `kind` (GATE_KINDS)."""

    cell: dict
    kind: str
    reason: str
    allowed: bool = False  # by --allow KIND: listed, but the gate passes it

    def to_dict(self) -> dict:
        return {"cell": self.cell, "kind": self.kind, "reason": self.reason, "allowed": self.allowed}


def _list(ci) -> list[float] | None:
    return list(ci) if ci is not None else None


def change_text(speedup: float) -> str:
    if speedup >= 1:
        return "no change" if speedup == 1 else f"{(speedup - 1) * 100:.1f}% faster"
    return f"{(1 / speedup - 1) * 100:.1f}% slower"


def percent(threshold: float) -> str:
    return f"{threshold * 100:g}%"


def _closed_loop(r: Result) -> tuple[list[list], float]:
    """Each process's workers' samples and the items per call. A result stored before repetitions (schema ≤ 2)
    kept its workers' samples pooled: treated as one worker issuing `workers` × batch items per call."""
    if r.repetitions:
        return [rep.get("worker_samples", []) for rep in r.repetitions], float(r.batch_size)
    return [[r.samples]], float(r.batch_size * r.workers)


def _tokens_per_call(r: Result, metric: Metric, median_ns: float) -> float:
    """Tokens per call, from the stored rate at the median call: rate = tokens per call / median call time."""
    return getattr(r, metric.figure)["median"] * median_ns / 1e9


def _stored_ci(r: Result, metric: Metric) -> tuple[float, float] | None:
    ci = (getattr(r, metric.figure) or {}).get("ci95")
    return (float(ci[0]), float(ci[1])) if ci else None


def _speedup(sides: tuple[Side, Side], metric: str, higher_is_better: bool, tokens_scale: float,
             confidence: float) -> tuple[Ratio, Ratio]:
    """(new/base of the figure, the speed-up) with their intervals at `confidence`."""
    ratio = side_ratio(*sides, confidence)  # of median call times, or of closed-loop items/s
    if higher_is_better and metric != THROUGHPUT.name:  # tokens/s: tokens per call / call time
        ratio = ratio.inverse().scaled(tokens_scale)
    return ratio, ratio if higher_is_better else ratio.inverse()


def compare_sides(base: Side, new: Side, metric: Metric = LATENCY, *, threshold: float = 0.0,
                  tokens_scale: float = 1.0, cell: dict | None = None) -> CellComparison:
    """A cell's comparison from its two sides (measure/compare.py): the verdict at 95%, without the reasons the
    Results would add. The points are ns per call for latencies, the figure itself for throughput."""
    sides = (base, new)
    ratio, speedup = _speedup(sides, metric.name, metric.higher_is_better, tokens_scale, FAMILY_CONFIDENCE)
    verdict, reasons = judge(speedup, threshold)
    return CellComparison(
        cell=cell or {}, metric=metric.name, unit=metric.unit, higher_is_better=metric.higher_is_better,
        base=base.point, new=new.point, ratio=ratio, speedup=speedup, verdict=verdict, reasons=reasons,
        processes=(base.processes, new.processes), threshold=threshold, sides=sides, tokens_scale=tokens_scale)


def compare_results(base: Result, new: Result, *, threshold: float = 0.0, seed: int = 0,
                    resamples: int = 2000) -> CellComparison:
    """`new` against `base`: two ok results judged on the same figure (any two, not only one cell of two runs),
    at 95% (compare_runs corrects for the number of cells)."""
    for side, r in (("base", base), ("new", new)):
        if r.status != "ok":
            raise ValueError(f"the {side} result is {r.status}: only ok results can be compared")
    metric = metric_of(base)
    if metric_of(new) != metric:
        raise ValueError(f"cannot compare {metric.name} with {metric_of(new).name}")
    rng = np.random.default_rng(seed)
    scale = 1.0
    if metric is THROUGHPUT:
        sides = [closed_loop_side(*_closed_loop(r), resamples=resamples, rng=rng) for r in (base, new)]
        values = sides[0].point, sides[1].point
    else:
        sides = [bootstrap_side(r.process_samples(), resamples=resamples, rng=rng) for r in (base, new)]
        if metric.higher_is_better:
            tokens = [_tokens_per_call(r, metric, s.point) for r, s in ((base, sides[0]), (new, sides[1]))]
            scale = tokens[1] / tokens[0]
            values = tokens[0] * 1e9 / sides[0].point, tokens[1] * 1e9 / sides[1].point
        else:
            values = sides[0].point / 1e6, sides[1].point / 1e6
    c = compare_sides(sides[0], sides[1], metric, threshold=threshold, tokens_scale=scale, cell=cell_of(new))
    c.base, c.new = float(values[0]), float(values[1])
    c.reasons += _side_reasons(base, new, sides)
    c.machine = machine_beside(base, new, threshold)
    if c.machine:
        c.reasons += machine_words(c.machine)
    c.base_ci, c.new_ci = _stored_ci(base, metric), _stored_ci(new, metric)
    c.warnings = {name: list(r.verdict["reasons"]) for name, r in (("base", base), ("new", new))
                  if r.verdict and r.verdict.get("reasons")}
    return c


def confidence_text(confidence: float) -> str:
    """`95%`, `98.333%`, `99.975%`."""
    return f"{confidence * 100:.5g}%"


def judge(speedup: Ratio, threshold: float, confidence: float = FAMILY_CONFIDENCE) -> tuple[str, list[str]]:
    """The verdict on a speed-up, its interval at `confidence`, and the reason for it (see the module's
    docstring): a change is called only when the whole interval lies beyond the threshold."""
    if speedup.ci95 is None:
        return "no significant change", ["no confidence interval (a side has a single sample): cannot judge; "
                                         "raise --min-samples"]
    lo, hi = speedup.ci95
    ci = f"{confidence_text(confidence)} CI of the speed-up [{lo:.3f}, {hi:.3f}]"
    beyond = f" and beyond the {percent(threshold)} threshold" if threshold else ""
    if lo > 1 + threshold:
        return "faster", [f"{ci} lies above 1{beyond}"]
    if hi < 1 / (1 + threshold):
        return "slower", [f"{ci} lies below 1{beyond}"]
    if lo > 1 or hi < 1:
        return "no significant change", [f"{ci} excludes 1 but reaches inside the {percent(threshold)} threshold: "
                                         "a change too small to count"]
    return "no significant change", [f"{ci} includes 1"]


def correct(cells: list[CellComparison], threshold: float, method: str = "holm") -> int:
    """Judge `cells` as one family (see the module's docstring): Holm's step-down, each cell's verdict, reason,
    `confidence` and `decision` set from the interval it was judged on. Returns the family's size: the cells
    with an interval. `none` leaves every verdict at 95%."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}: use one of {', '.join(CORRECTIONS)}")
    family = [c for c in cells if c.speedup.ci95 is not None]
    m = len(family)
    if method == "none" or m <= 1:
        return m
    alpha = 1 - FAMILY_CONFIDENCE
    # a cell whose 95% interval calls no change calls none at any higher confidence (the intervals are nested)
    remaining = [c for c in family if c.verdict != "no significant change"]
    k = m
    while remaining:
        confidence = 1 - alpha / k
        judged = [(c, c.interval_at(confidence)) for c in remaining]
        called = [(c, interval, judge(interval, threshold, confidence)) for c, interval in judged]
        called = [x for x in called if x[2][0] != "no significant change"]
        if not called:
            break
        for c, interval, (verdict, reasons) in called:
            c.verdict, c.confidence, c.decision = verdict, confidence, interval
            c.reasons[0] = f"{reasons[0]} (Holm's correction over {m} cells)"
        done = {id(c) for c, _, _ in called}
        remaining = [c for c in remaining if id(c) not in done]
        k -= len(called)
    confidence = 1 - alpha / k
    for c in remaining:  # beyond the threshold at 95% alone: within what m cells' noise gives by chance
        interval = c.interval_at(confidence)
        lo, hi = interval.ci95
        c.reasons[0] = (f"{c.reasons[0]}, but not its {confidence_text(confidence)} CI [{lo:.3f}, "
                        f"{hi:.3f}] that Holm's correction over {m} cells asks: a change within chance")
        c.verdict, c.confidence, c.decision = "no significant change", confidence, interval
    return m


def machine_beside(base: Result, new: Result, threshold: float) -> dict | None:
    """How fast the machine ran beside each side's cell, from the GEMM probes its processes timed (GFLOP/s):
    their medians and ranges, `moved` when the medians differ by more than the threshold (and PROBE_RESOLUTION),
    `unsteady` the sides whose probes span more than DRIFT. None where a side has no probe."""
    a, b = base.gemm_probes(), new.gemm_probes()
    hosts = _hostnames(base, new)
    if not a or not b or hosts[0] != hosts[1]:  # two Ray nodes' probes time two machines: _side_reasons says so
        return None
    median_a, median_b = float(np.median(a)), float(np.median(b))
    change = median_b / median_a
    return {"base_gflops": median_a, "new_gflops": median_b, "change": change,
            "base_range": [min(a), max(a)], "new_range": [min(b), max(b)],
            "moved": max(change, 1 / change) > 1 + max(threshold, PROBE_RESOLUTION),
            "unsteady": [side for side, p in (("base", a), ("new", b)) if max(p) / min(p) > DRIFT]}


def machine_words(m: dict) -> list[str]:
    """The reasons a comparison gives for `machine_beside`'s finding, none when the machine held still."""
    words = []
    if m["moved"]:
        change = m["change"]
        how = f"{(change - 1) * 100:.0f}% faster" if change > 1 else f"{(1 / change - 1) * 100:.0f}% slower"
        words.append(f"the machine itself ran {how} beside the new run's cell than beside the base's (numpy GEMM "
                     f"probes, median {m['base_gflops']:.0f} → {m['new_gflops']:.0f} GFLOP/s): a change of this "
                     "size can be the machine's, not the engine's; measure both again")
    for side in m["unsteady"]:
        lo, hi = m[f"{side}_range"]
        words.append(f"the machine's speed moved during the {side} run's cell (GEMM probes {lo:.0f}-{hi:.0f} GFLOP/s)")
    return words


def _hostnames(base: Result, new: Result) -> list[str | None]:
    """The machine each result was measured on, where a Ray node wrote it (details.node), else None."""
    return [((r.details or {}).get("node") or {}).get("hostname") for r in (base, new)]


def _side_reasons(base: Result, new: Result, sides: list[Side]) -> list[str]:
    reasons = []
    for name, r, side in (("base", base, sides[0]), ("new", new, sides[1])):
        if side.processes == 1:
            reasons.append(f"{name}: one process, so its CI covers within-process variance only")
        warned = (r.verdict or {}).get("reasons") or []
        if warned:  # the reasons themselves are in CellComparison.warnings
            reasons.append(f"{name} result's verdict warns ({len(warned)} reason{'s' if len(warned) > 1 else ''})")
        if r.fidelity and r.fidelity.get("ok") is False:
            reasons.append(f"{name} result fails its fidelity check")
    for label, get in (("engine version", lambda r: r.engine_version), ("executed precision",
                       lambda r: r.executed_precision), ("seq_len", lambda r: r.seq_len),
                       ("engine options", lambda r: r.engine_options)):
        if get(base) != get(new):
            reasons.append(f"{label} differs: {get(base)} → {get(new)}")
    share = positions_differ(base, new)
    if share is not None:  # e.g. sentence-transformers before it padded like the others
        positions = [r.details["positions_per_item"] for r in (base, new)]
        reasons.append(f"token positions computed per input differ: {positions[0]:.1f} → {positions[1]:.1f} "
                       f"({share:.0%}): not the same work")
    hosts = _hostnames(base, new)
    if all(hosts) and hosts[0] != hosts[1]:  # Ray nodes: each result's own machine, not the orchestrator's
        reasons.append(f"measured on different machines: {hosts[0]} → {hosts[1]}")
    return reasons


@dataclass
class RunComparison:
    base_id: str
    new_id: str
    threshold: float
    cells: list[CellComparison] = field(default_factory=list)
    only_in_base: list[dict] = field(default_factory=list)  # cell dicts
    only_in_new: list[dict] = field(default_factory=list)
    not_compared: list[dict] = field(default_factory=list)  # {"cell": ..., "why": "new failed: ..."}
    machine_differences: list[str] = field(default_factory=list)
    version_differences: list[str] = field(default_factory=list)
    setup_differences: list[str] = field(default_factory=list)  # stopping rule, repeat, workloads, options
    one_process: list[str] = field(default_factory=list)  # "base" / "new": sides with a cell of one process
    # cells left unmatched for a difference in their identity: {"base": cell, "new": cell, "differs": [...]}
    near_misses: list[dict] = field(default_factory=list)
    issues: list[GateIssue] = field(default_factory=list)  # cells the new run cannot vouch for, blocking first
    allow: frozenset[str] = frozenset()  # GATE_KINDS the gate lets pass
    correction: str = "holm"  # over the cells of this comparison (CORRECTIONS)
    family: int = 0  # cells judged together: those with an interval

    def regressions(self, threshold: float | None = None) -> list[CellComparison]:
        """Cells slower by more than `threshold` (this comparison's when None) at their verdict's confidence."""
        if threshold is None:
            return [c for c in self.cells if c.verdict == "slower"]
        return [c for c in self.cells if c.slower_beyond(threshold)]

    def blocking(self) -> list[GateIssue]:
        """The issues the gate fails on: those not allowed."""
        return [i for i in self.issues if not i.allowed]

    def machine_moved(self) -> list[CellComparison]:
        """Cells beside which the machine ran at another speed in one run than in the other, or moved within one."""
        return [c for c in self.cells if c.machine_moved]

    def fails_gate(self) -> bool:
        """What `--fail-on regression` exits 1 on: a slower cell or an issue not allowed."""
        return bool(self.regressions() or self.blocking())

    def differences(self) -> list[str]:
        return self.machine_differences + self.version_differences + self.setup_differences

    def correction_text(self) -> str:
        if self.correction == "none" or self.family <= 1:
            return (f"no correction for multiple comparisons ({self.family} cell{'s' * (self.family != 1)} judged, "
                    "each at 95%)")
        return (f"Holm's correction over {self.family} cells: family-wise 95% confidence (each cell judged at "
                f"{confidence_text(1 - (1 - FAMILY_CONFIDENCE) / self.family)} to 95%)")

    def to_dict(self) -> dict:
        return {
            "base": self.base_id, "new": self.new_id, "threshold": self.threshold,
            "gate": {"fails": self.fails_gate(), "allow": sorted(self.allow),
                     "issues": [i.to_dict() for i in self.issues],
                     "slower": [c.cell for c in self.regressions()]},
            "correction": {"method": self.correction, "cells": self.family,
                           "family_confidence": FAMILY_CONFIDENCE, "text": self.correction_text()},
            "machine_differences": self.machine_differences, "version_differences": self.version_differences,
            "setup_differences": self.setup_differences, "one_process": self.one_process,
            "cells": [c.to_dict() for c in self.cells],
            "machine_moved": [c.cell for c in self.machine_moved()],
            "regressions": [c.cell for c in self.regressions()],
            "only_in_base": self.only_in_base, "only_in_new": self.only_in_new, "not_compared": self.not_compared,
            "near_misses": self.near_misses,
        }


def _keyed(results: list[Result], keys: list[tuple]) -> dict[tuple, Result]:
    """Results by their cell's key; a cell seen twice in one run is told apart by its occurrence."""
    out: dict[tuple, Result] = {}
    for r, key in zip(results, keys):
        n = 0
        while (*key, n) in out:
            n += 1
        out[(*key, n)] = r
    return out


def check_allow(kinds: Iterable[str]) -> frozenset[str]:
    kinds = frozenset(kinds)
    unknown = sorted(kinds - set(GATE_KINDS))
    if unknown:
        raise ValueError(f"unknown gate kind {', '.join(map(repr, unknown))}: allow any of {', '.join(GATE_KINDS)}")
    return kinds


def _fidelity_text(f: dict | None) -> str:
    if not f:
        return "not checked"
    value = f.get("value")
    shown = f"{value:.4g}" if isinstance(value, (int, float)) else "none"
    return f"{f.get('metric', 'fidelity')} {shown}, threshold {f.get('threshold')}"


def _issues(rb: Result, rn: Result | None, c: CellComparison | None, new_id: str,
            differs: list[str] | None = None) -> list[tuple[str, str]]:
    """(kind, reason) for a cell the base measured ok (see GATE_KINDS); `differs`: how the new run's nearest
    cell differs from it, when a missing cell has one."""
    if rn is None:
        near = f"; not the same cell as new's with {'; '.join(differs)}" if differs else ""
        return [("missing", f"measured in base, absent from new ({new_id}){near}")]
    if rn.status != "ok":
        return [(rn.status, f"new {rn.status}: {rn.error}")]
    found = []
    if (rb.fidelity or {}).get("ok") is True and (rn.fidelity or {}).get("ok") is not True:
        found.append(("fidelity", f"fidelity ok in base ({_fidelity_text(rb.fidelity)}), "
                                  f"{'fails' if rn.fidelity else 'unchecked'} in new ({_fidelity_text(rn.fidelity)})"))
    if c is not None and c.speedup.ci95 is None:
        found.append(("no-ci", f"no confidence interval to judge it by (processes base {c.processes[0]}, new "
                               f"{c.processes[1]}; a side with fewer than 2 calls): measure more calls"))
    return found


def compare_runs(base: Run, new: Run, *, threshold: float = 0.05, seed: int = 0, resamples: int = 2000,
                 correction: str = "holm", allow: Iterable[str] = ()) -> RunComparison:
    """`new` against `base` cell by cell, the cells judged as one family (`correction`), and what the gate
    fails on besides slower cells (GATE_KINDS; `allow`: the kinds it lets pass)."""
    allow = check_allow(allow)
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}: use one of {', '.join(CORRECTIONS)}")
    out = RunComparison(base.run_id, new.run_id, threshold, machine_differences=machine_differences(base.machine,
                        new.machine), version_differences=version_differences(base, new),
                        setup_differences=setup_differences(base.config, new.config), allow=allow,
                        correction=correction)
    ia, ib = ([cell_identity(r, run) for r in run.results] for run in (base, new))
    matching = Matching(ia, ib)
    out.setup_differences += matching.notes
    a, b = _keyed(base.results, [matching.key(i) for i in ia]), _keyed(new.results, [matching.key(i) for i in ib])
    identity = {id(r): i for r, i in zip(base.results + new.results, ia + ib)}
    near = _near_misses(a, b, identity, matching)
    issues = []
    for key, rb in a.items():
        rn, c = b.get(key), None
        if rn is None:
            out.only_in_base.append(cell_of(rb))
            if key in near:
                out.near_misses.append({"base": cell_of(rb), "new": cell_of(near[key][0]), "differs": near[key][1]})
        elif rb.status != "ok" or rn.status != "ok":
            why = "; ".join(f"{side} {r.status}: {r.error}" for side, r in (("base", rb), ("new", rn))
                            if r.status != "ok")
            out.not_compared.append({"cell": cell_of(rb), "why": why})
        elif metric_of(rb) != metric_of(rn):
            out.not_compared.append({"cell": cell_of(rb), "why": f"base measured {metric_of(rb).name}, new "
                                                                 f"{metric_of(rn).name}"})
        else:
            c = compare_results(rb, rn, threshold=threshold, seed=seed, resamples=resamples)
            out.cells.append(c)
        if rb.status == "ok":
            issues += [GateIssue(cell_of(rb), kind, reason, kind in allow) for kind, reason in
                       _issues(rb, rn, c, new.run_id, near.get(key, (None, None))[1])]
    out.issues = sorted(issues, key=lambda i: i.allowed)  # blocking first, each in the base's order
    out.family = correct(out.cells, threshold, correction)
    out.only_in_new = [cell_of(r) for key, r in b.items() if key not in a]
    out.one_process = [side for side, i in (("base", 0), ("new", 1)) if any(c.processes[i] == 1 for c in out.cells)]
    return out


def _near_misses(a: dict, b: dict, identity: dict, matching: Matching) -> dict[tuple, tuple[Result, list[str]]]:
    """For each base cell without a match: a new cell without one that agrees on engine, precision, scenario,
    workload, batch and workers×threads, and what tells them apart (`base seq 128, new seq 64`)."""
    unmatched = [r for key, r in b.items() if key not in a]
    out = {}
    for key, rb in a.items():
        if key in b:
            continue
        near = [r for r in unmatched if all(getattr(r, k) == getattr(rb, k) for k in _NEAR_KEYS)]
        if near:
            rn = near[0]
            unmatched.remove(rn)
            out[key] = (rn, matching.differences(identity[id(rb)], identity[id(rn)]))
    return out


# --- what differs between the runs besides the engines' speed -------------------------------------------------

_MACHINE = (("cpu", "CPU"), ("logical_cores", "logical cores"), ("physical_cores", "physical cores"),
            ("affinity", "CPU affinity"), ("cpu_flags", "CPU flags"), ("memory_gb", "memory (GB)"),
            ("governor", "CPU governor"), ("os", "OS"), ("python", "Python"), ("env", "environment"))


def _cpus(affinity) -> str:
    if not affinity:
        return "unrecorded"
    if affinity == list(range(affinity[0], affinity[-1] + 1)):
        return f"{affinity[0]}-{affinity[-1]} ({len(affinity)} CPUs)"
    return f"{','.join(map(str, affinity))} ({len(affinity)} CPUs)"


def _shown(value) -> str:
    return "unrecorded" if value is None else str(value)


def machine_differences(a: dict, b: dict) -> list[str]:
    """Readable lines, base → new, for each machine fact that differs (measure/machine.py records them)."""
    lines = []
    for key, label in _MACHINE:
        va, vb = a.get(key), b.get(key)
        if va == vb:
            continue
        if key == "cpu_flags" and va is not None and vb is not None:
            change = [f"+{f}" for f in vb if f not in va] + [f"-{f}" for f in va if f not in vb]
            lines.append(f"{label}: {' '.join(change)} (base {' '.join(va) or 'none'})")
        elif key == "affinity":
            lines.append(f"{label}: {_cpus(va)} → {_cpus(vb)}")
        elif key == "env":
            va, vb = va or {}, vb or {}
            lines += [f"{label} {name}: {va.get(name, 'unset')} → {vb.get(name, 'unset')}"
                      for name in sorted(set(va) | set(vb)) if va.get(name) != vb.get(name)]
        else:
            lines.append(f"{label}: {_shown(va)} → {_shown(vb)}")
    return lines


def _engine_versions(run: Run) -> dict[str, str]:
    versions: dict[str, set] = {}
    for r in run.results:
        if r.engine_version:
            versions.setdefault(r.engine, set()).add(r.engine_version)
    return {engine: ", ".join(sorted(v)) for engine, v in versions.items()}


def version_differences(base: Run, new: Run) -> list[str]:
    """Engines' own versions (Result.engine_version, for engines in both runs) and the libraries recorded."""
    lines = []
    ea, eb = _engine_versions(base), _engine_versions(new)
    lines += [f"engine {e}: {ea[e]} → {eb[e]}" for e in ea if e in eb and ea[e] != eb[e]]
    la, lb = base.machine.get("libraries") or {}, new.machine.get("libraries") or {}
    for name in sorted(set(la) | set(lb)):
        change = f"{la.get(name, 'absent')} → {lb.get(name, 'absent')}"
        if la.get(name) != lb.get(name) and f"engine {name}: {change}" not in lines:  # said once
            lines.append(f"{name}: {change}")
    return lines


def setup_differences(a: dict, b: dict) -> list[str]:
    """How the runs measured: stopping rule, processes per cell, workloads, engine options."""
    lines = []
    rules = [StoppingRule(**c["stopping_rule"]).describe() if c.get("stopping_rule") else "unrecorded" for c in (a, b)]
    if rules[0] != rules[1]:
        lines.append(f"stopping rule: {rules[0]} → {rules[1]}")
    repeats = [c.get("repeat", 1) for c in (a, b)]
    if repeats[0] != repeats[1]:
        lines.append(f"processes per cell (--repeat): {repeats[0]} → {repeats[1]}")
    workloads = [c.get("workloads") or {} for c in (a, b)]
    lines += [f"workload {name}: {json.dumps(workloads[0][name])} → {json.dumps(workloads[1][name])}"
              for name in sorted(set(workloads[0]) & set(workloads[1])) if workloads[0][name] != workloads[1][name]]
    # an engine given no -o in one run ran with its defaults there: a difference too
    options = [c.get("engine_options") or {} for c in (a, b)]
    lines += [f"engine options {name}: {_options_text(options[0].get(name))} → {_options_text(options[1].get(name))}"
              for name in sorted(set(options[0]) | set(options[1])) if options[0].get(name, {}) != options[1].get(name, {})]
    return lines


def _options_text(options: dict | None) -> str:
    return json.dumps(options) if options else "its defaults"


__all__ = ["CellComparison", "RunComparison", "GateIssue", "GATE_KINDS", "CORRECTIONS", "compare_results",
           "compare_sides", "compare_runs", "correct", "check_allow", "metric_of", "judge",
           "machine_differences", "version_differences", "setup_differences"]
