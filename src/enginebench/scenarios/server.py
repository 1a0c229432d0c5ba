"""The server scenario: queries arrive as a Poisson process (LoadGen's Server scenario) into a queue served by
the workers, with an optional dynamic batcher; latency counts from arrival. A VALID/INVALID verdict against
the p99 target, and --find-max-qps: the highest rate that stays VALID, with the bracket that bounds it.

Why a bracketing search over full PerformanceOnly runs rather than LoadGen's FindPeakPerformance mode: that
mode reports only its final boundary in its log, while a search here keeps every trial's figures and judges
each with the whole verdict (LoadGen's own result and early stopping, and whether the system fell behind).
"""

from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

from enginebench.measure.stats import over_processes
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Serving
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.loadgen_sut import LoadgenRun, WorkerPool, run_loadgen

# LoadGen's early stopping at the 99th percentile (99% confidence): with no query over the target, n queries
# bound the p99 only once 0.99**n <= 0.01, i.e. n >= 459. Fewer, and no p99 verdict can be VALID.
MIN_QUERIES_P99 = math.ceil(math.log(0.01) / math.log(0.99))
FELL_BEHIND = 0.95  # achieved below this fraction of the scheduled rate: the queue did not keep up
QUEUE_POINTS = 50  # samples of the queue depth over time kept with the result
SEARCH_TOLERANCE = 0.05  # --find-max-qps stops when the bracket's ends are within 5% of each other
SEARCH_STEP = 1.5  # factor between rates while the bracket is still open on one side
SEARCH_TRIALS = 12
SEARCH_START = 0.7  # of the capacity the warm-up suggests, when --qps does not say where to start
SEARCH_FLOOR = 0.1  # the search gives up below this fraction of its starting rate
# a rate that met its target but left LoadGen's early stopping unsure is run again with the queries LoadGen
# asks for, when that is at most this many times the run's own count
MORE_QUERIES_FACTOR = 4
QUEUEING_SHARE = 0.1  # a p99 over the target with waits under this share of it: the calls alone are too slow


# -- seeds -------------------------------------------------------------------------------------------------------
def loadgen_seeds(seed: int, repetition: int, trial: int) -> dict:
    """LoadGen's three seeds for one run: the cell's --seed, its repetition and the run's number within the
    cell (a search's trials) each give another arrival schedule and sample order, reproducibly."""
    state = np.random.SeedSequence([seed, repetition, trial]).generate_state(3)
    return {key: int(v) for key, v in zip(("schedule_rng_seed", "qsl_rng_seed", "sample_index_rng_seed"), state)}


# -- figures -------------------------------------------------------------------------------------------------
def percentile_ci(values: np.ndarray, q: float, resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """95% CI of the q-th percentile by a moving-block bootstrap: queued queries' latencies are correlated
    with their neighbours' (they wait behind the same backlog), so blocks of about sqrt(n) consecutive queries
    are resampled together; an i.i.d. bootstrap would claim a narrower interval than the data supports."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n < 2:
        return None
    block = max(1, int(math.sqrt(n)))
    blocks = math.ceil(n / block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - block + 1, size=(resamples, blocks))
    idx = (starts[:, :, None] + np.arange(block)).reshape(resamples, -1)[:, :n]
    stats = np.percentile(v[idx], q, axis=1)
    return [float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))]


def percentiles(values_ms: np.ndarray) -> dict:
    return {f"p{q}": {"value": float(np.percentile(values_ms, q)), "ci95": percentile_ci(values_ms, q)}
            for q in (50, 90, 99)}


FROM_SCHEDULED = "LoadGen's scheduled arrival"  # where a run's percentiles count from (percentiles_from)
FROM_ISSUE = "enginebench's issue callback"
LATENCY_KEY = "result_{q}.00_percentile_latency_ns"  # LoadGen's detail log, per percentile q


def loadgen_percentiles(log: dict, own: dict, key: str = LATENCY_KEY) -> tuple[dict, str]:
    """(LoadGen's p50/p90/p99, ms, counted from each query's scheduled arrival, FROM_SCHEDULED): what a
    LoadGen user reads; it keeps no per-query latencies, so no CI. (`own`, FROM_ISSUE) where its log has none."""
    keys = {q: key.format(q=q[1:]) for q in ("p50", "p90", "p99")}
    if not all(k in log for k in keys.values()):
        return own, FROM_ISSUE
    return {q: {"value": log[k] / 1e6, "ci95": None} for q, k in keys.items()}, FROM_SCHEDULED


def queue_depth(arrival_ns: np.ndarray, complete_ns: np.ndarray, points: int = QUEUE_POINTS) -> dict:
    """Queries in the system (arrived, not completed) over time: `series` [[s since the first arrival,
    count]], its max, and its means over the first and the last quarter of the arrivals' span."""
    arrivals, completions = np.sort(arrival_ns), np.sort(complete_ns)
    t0, t_end = arrivals[0], completions[-1]

    def depth(t):
        return np.searchsorted(arrivals, t, "right") - np.searchsorted(completions, t, "right")

    grid = np.linspace(t0, t_end, points)
    fine = np.linspace(t0, arrivals[-1], 400)  # the quarters are taken over the arrivals' span
    quarter = len(fine) // 4
    every = depth(np.concatenate([arrivals, completions]))
    return {"series": [[round(float((t - t0) / 1e9), 4), int(d)] for t, d in zip(grid, depth(grid))],
            "max": int(every.max()), "first_quarter_mean": float(depth(fine[:quarter]).mean()),
            "last_quarter_mean": float(depth(fine[-quarter:]).mean())}


def batching(run: LoadgenRun) -> dict:
    """How the batcher grouped the queries and how long a batch held its worker."""
    b = run.trace.batches
    sizes, counts = np.unique(b[:, 1], return_counts=True)
    return {"batches": int(len(b)), "mean_size": float(b[:, 1].mean()),
            "sizes": {int(s): int(c) for s, c in zip(sizes, counts)},
            # dispatch -> completion: how long a batch holds its worker, transfers included (the service time
            # of the queue); the session call alone is call_ms
            "hold_ms_median": float(np.median(b[:, 5] - b[:, 2]) / 1e6),
            "call_ms_median": float(np.median(b[:, 4] - b[:, 3]) / 1e6)}


def loadgen_result(log: dict) -> dict:
    """What LoadGen itself concluded, from its detail log."""
    keys = ("result_validity", "result_invalid_reason", "result_min_duration_met", "result_min_queries_met",
            "result_perf_constraints_met", "early_stopping_met", "early_stopping_result", "result_query_count",
            "result_overlatency_query_count", "result_scheduled_samples_per_sec",
            "result_completed_samples_per_sec", "result_samples_per_second", "result_50.00_percentile_latency_ns",
            "result_90.00_percentile_latency_ns", "result_99.00_percentile_latency_ns")
    return {k.removeprefix("result_"): log[k] for k in keys if k in log}


def run_seeds(run) -> dict:
    """The seeds a run was given, as recorded in its settings."""
    return {k: v for k, v in run.settings.items() if k.endswith("_rng_seed")}


def loadgen_reasons(result: dict) -> list[str]:
    if result.get("validity") == "VALID":
        return []
    why = [text for key, text in (("min_duration_met", "min duration not met"),
                                  ("min_queries_met", "min query count not met"),
                                  ("perf_constraints_met", "p99 over the target"),
                                  ("early_stopping_met", "early stopping not satisfied")) if result.get(key) is False]
    if result.get("invalid_reason"):
        why.append(str(result["invalid_reason"]))
    if result.get("early_stopping_met") is False and result.get("early_stopping_result"):
        why.append(" ".join(str(result["early_stopping_result"]).replace("*", "").split()))
    return [f"LoadGen: {result.get('validity', 'no result')}" + (f" ({'; '.join(why)})" if why else "")]


def server_figures(run: LoadgenRun, qps: float, slo_ms: float, workers: int, max_batch: int) -> dict:
    """Every figure of one server run, and its verdict: VALID when LoadGen says VALID, the p99 from arrival is
    within the target, there were enough queries for a p99, and the system kept up with the arrivals."""
    t = run.trace
    latency_ms = t.latency_ns / 1e6
    n = int(latency_ms.size)
    span_s = (t.complete_ns.max() - t.arrival_ns.min()) / 1e9
    achieved = float(n / span_s)
    result = loadgen_result(run.log)
    scheduled = float(result.get("scheduled_samples_per_sec") or qps)
    queue = queue_depth(t.arrival_ns, t.complete_ns)
    own = percentiles(latency_ms)
    lat, source = loadgen_percentiles(run.log, own)
    reasons = loadgen_reasons(result)
    if n < MIN_QUERIES_P99:
        reasons.append(f"only {n} queries: a p99 needs >= {MIN_QUERIES_P99} (LoadGen's early-stopping minimum); "
                       "raise --min-samples or --duration")
    if lat["p99"]["value"] > slo_ms:
        reasons.append(f"SLO missed: p99 {lat['p99']['value']:.3g} ms from {source} > {slo_ms:g} ms")
    if achieved < FELL_BEHIND * scheduled:
        reasons.append(f"fell behind: achieved {achieved:.4g} q/s < {FELL_BEHIND:.0%} of the {scheduled:.4g} q/s "
                       "scheduled")
    in_service = workers * max_batch
    if queue["last_quarter_mean"] > 2 * queue["first_quarter_mean"] + 2 * in_service:
        reasons.append(f"queue grew: {queue['last_quarter_mean']:.3g} queries in the system over the last quarter "
                       f"of the arrivals vs {queue['first_quarter_mean']:.3g} over the first")
    wait_ms = (t.dispatch_ns - t.arrival_ns) / 1e6
    return {
        "more_queries": more_queries_needed(result, reasons[1:] if result.get("validity") != "VALID" else reasons),
        "scenario": "server", "target_qps": qps, "slo_p99_ms": slo_ms, "queries": n,
        "achieved_qps": achieved, "scheduled_qps": scheduled,
        "achieved_qps_ci95": poisson_rate_ci(n, span_s),
        "latency_ms": lat, "percentiles_from": source, "issue_latency_ms": own,
        "wait_ms": {"p50": float(np.percentile(wait_ms, 50)), "p99": float(np.percentile(wait_ms, 99))},
        "queue": queue, "batching": batching(run), "loadgen": result, "seeds": run_seeds(run),
        "valid": not reasons, "reasons": reasons,
    }


_MORE_QUERIES = re.compile(r"at least (\d+) more queries")


def more_queries_needed(result: dict, own_reasons: list[str]) -> int | None:
    """How many more queries LoadGen's early stopping asks for, when that is all that kept the run from VALID
    (its latency target met, nothing else wrong); None otherwise."""
    if own_reasons or result.get("early_stopping_met") is not False:
        return None
    if False in (result.get("perf_constraints_met"), result.get("min_duration_met"), result.get("min_queries_met")):
        return None
    text = " ".join(str(v) for k, v in result.items() if k.startswith("early_stopping_") and isinstance(v, str))
    found = [int(n) for n in _MORE_QUERIES.findall(text)]
    return max(found) if found else None


def poisson_rate_ci(n: int, span_s: float) -> list[float] | None:
    """95% CI of a rate from a count of Poisson arrivals (normal approximation)."""
    if n < 2 or span_s <= 0:
        return None
    half = 1.96 * math.sqrt(n)
    return [float((n - half) / span_s), float((n + half) / span_s)]


# -- the search ---------------------------------------------------------------------------------------------
@dataclass
class Search:
    """--find-max-qps: every trial's rate and verdict; `lo` the highest VALID rate, `hi` the lowest INVALID one
    above it (None while unbounded)."""

    trials: list[dict] = field(default_factory=list)
    lo: float | None = None
    hi: float | None = None
    stopped: str | None = None  # why the search ended without a VALID rate
    tolerance: float = SEARCH_TOLERANCE  # where it stops: hi / lo <= 1 + tolerance

    def to_dict(self) -> dict:
        return {"max_qps": self.lo, "bracket": [self.lo, self.hi], "tolerance": self.tolerance,
                "trials": self.trials, "stopped": self.stopped}


def calls_alone_miss(figures: dict) -> str | None:
    """Why no lower rate can be VALID, or None: the p99 misses the target with little queueing. Judged on
    enginebench's own p99, from issue, as the waits are: a query LoadGen saw issued late (a busy machine, the
    GIL) is not a call too slow, and a lower rate may relieve it."""
    own = figures.get("issue_latency_ms") or figures["latency_ms"]
    p99, wait99 = own["p99"]["value"], figures["wait_ms"]["p99"]
    if p99 > figures["slo_p99_ms"] and wait99 < QUEUEING_SHARE * p99:
        return (f"p99 {p99:.3g} ms > {figures['slo_p99_ms']:g} ms with little queueing "
                f"(p99 wait {wait99:.3g} ms): the calls alone miss the target")
    return None


def find_max_qps(trial, start_qps: float, tolerance: float | None = None, step: float = SEARCH_STEP,
                 max_trials: int = SEARCH_TRIALS, hopeless=calls_alone_miss) -> tuple[Search, object]:
    """Bracket, then bisect (geometrically), the highest rate `trial(qps) -> figures` judges VALID, until the
    bracket's ends are within `tolerance` (--search-within; None: SEARCH_TOLERANCE); returns the search and the
    figures of the best VALID trial (None if none was). `hopeless(figures)` says why no lower rate can help, or
    None. Each trial keeps the figures' `headline` (default: the p99 from arrival)."""
    search = Search(tolerance=tolerance or SEARCH_TOLERANCE)
    best = None
    qps = start_qps
    def record(figures: dict) -> None:
        headline = figures.get("headline") or {"p99_ms": figures["latency_ms"]["p99"]["value"]}
        search.trials.append({"qps": qps, "valid": figures["valid"], "achieved_qps": figures["achieved_qps"],
                              "queries": figures.get("queries"), **headline, "reasons": figures["reasons"],
                              "seeds": figures.get("seeds")})

    while len(search.trials) < max_trials:
        figures = trial(qps)
        record(figures)
        more = figures.get("more_queries")
        if not figures["valid"] and more and more <= MORE_QUERIES_FACTOR * figures["queries"]:
            # the target was met but too few queries bound the p99: LoadGen's advice, taken once
            figures = trial(qps, figures["queries"] + more)
            record(figures)
        if figures["valid"]:
            search.lo, best = qps, figures
        else:
            search.hi = qps
        if search.lo is None:
            # a lower rate only shortens the queue: stop where the queue is not what misses the target, and
            # before the runs grow long (a run lasts at least its minimum count of queries / the rate)
            why = hopeless(figures)
            if why:
                search.stopped = why
                break
            if qps / step < SEARCH_FLOOR * start_qps:
                search.stopped = f"no VALID rate down to {qps:.4g} q/s"
                break
            qps = qps / step
        elif search.hi is None:
            qps = qps * step
        elif search.hi / search.lo <= 1 + search.tolerance:
            break
        else:
            qps = math.sqrt(search.lo * search.hi)
    return search, best


def over_searches(searches: list[dict]) -> dict:
    """Every repetition's --find-max-qps search kept (`searches`); the first VALID one's trials and bracket
    at the top, as one search leaves them. A search's bracket is where it stopped, not an interval: with two
    or more searches that found a VALID rate, `max_qps` is their geometric mean and `max_qps_ci95` a t
    interval over them."""
    out = {**next((s for s in searches if s.get("max_qps")), searches[0])}
    if len(searches) < 2:
        return out
    out["searches"] = searches
    found = [s["max_qps"] for s in searches if s.get("max_qps")]
    if len(found) >= 2:
        point, lo, hi = over_processes(found)
        out["max_qps"], out["max_qps_ci95"] = float(point), [float(lo), float(hi)]
    return out


def capacity_estimate(ready: list[dict], max_batch: int) -> float:
    """Queries/s the workers could serve back to back, from their warm-up call times."""
    total = 0.0
    for report in ready:
        service = {int(k): v for k, v in report["service_ns"].items()}
        total += max(1e9 / service[1], max_batch * 1e9 / service[max_batch])
    return total


# -- the scenario -------------------------------------------------------------------------------------------
def serving_min_queries(rule: StoppingRule) -> int:
    return max(rule.min_samples, MIN_QUERIES_P99)


def expected_run_s(min_duration_s: float, min_queries: int, qps: float) -> float:
    """How long a LoadGen Server run lasts at least: until both its minimum duration and count are met."""
    return max(min_duration_s, min_queries / qps)


def measurement_from(run: LoadgenRun, figures: dict, pool: WorkerPool, byes: list[dict], samples, wall_s: float,
                     items_per_call: int, extra: dict) -> Measurement:
    ready = pool.ready
    first = ready[0]
    mask = pool.pool.attention_mask
    return Measurement(
        worker_samples=samples, items_per_call=items_per_call,
        tokens_per_item=float(mask.sum() / mask.shape[0]),
        load_s=max(r["load_s"] for r in ready),
        peak_rss_mb=sum(b.get("peak_rss_mb", 0.0) for b in byes),
        executed_precision=first["executed_precision"], wall_s=wall_s,
        details={**first["details"], "worker_load_s": [round(r["load_s"], 3) for r in ready],
                 "serving": figures, **extra,
                 "loadgen": {"settings": run.settings, "summary": run.summary, "log": run.log}},
    )


def run_server(load_session, workload, cell: Cell, rule: StoppingRule, fidelity_inputs=None,
               on_loaded=None, repetition: int = 0, on_trial=None) -> tuple[Measurement, np.ndarray | None]:
    """One server cell: a LoadGen Server run at `cell.serving.qps`, or the --find-max-qps search. The
    Measurement's samples are every query's latency from arrival (ns). Each LoadGen run has seeds of its own
    (loadgen_seeds: the repetition and the run's number), recorded with its figures; `on_trial(seconds)` hears
    how long each is expected to take before it starts."""
    serving: Serving = cell.serving
    pool = WorkerPool(load_session, workload.pool, cell.workers, serving.max_batch, rule.warmup_s, fidelity_inputs,
                      dynamic=workload.dynamic_padding)
    byes: list[dict] = []
    try:
        ready = pool.start()
        if on_loaded is not None:
            on_loaded()
        with tempfile.TemporaryDirectory(prefix="enginebench-loadgen-") as outdir:
            runs: dict[float, LoadgenRun] = {}  # by rate: the last run at each
            count = [0]

            def trial(qps: float, min_queries: int | None = None) -> dict:
                seeds = loadgen_seeds(serving.seed, repetition, count[0])
                count[0] += 1
                queries = min_queries or serving_min_queries(rule)
                if on_trial is not None:
                    on_trial(expected_run_s(rule.duration_s, queries, qps))
                run = run_loadgen(pool, scenario="server", max_batch=serving.max_batch,
                                  max_wait_ms=serving.max_wait_ms, outdir=outdir, min_duration_s=rule.duration_s,
                                  min_queries=queries, seeds=seeds, qps=qps,
                                  slo_ms=serving.slo_p99_ms)
                runs[qps] = run
                return server_figures(run, qps, serving.slo_p99_ms, cell.workers, serving.max_batch)

            extra = {}
            if serving.find_max_qps:
                start = serving.qps or SEARCH_START * capacity_estimate(ready, serving.max_batch)
                search, figures = find_max_qps(trial, start, serving.search_within)
                if figures is None:  # nothing VALID: report the lowest rate tried, INVALID
                    lowest = min(t["qps"] for t in search.trials)
                    figures = server_figures(runs[lowest], lowest, serving.slo_p99_ms, cell.workers,
                                             serving.max_batch)
                    why = search.stopped or f"no rate tried was VALID (lowest {lowest:.4g} q/s)"
                    figures["reasons"] = [f"--find-max-qps: {why}"] + figures["reasons"]
                run = runs[figures["target_qps"]]
                extra["find_max_qps"] = {**search.to_dict(), "capacity_estimate_qps": capacity_estimate(
                    ready, serving.max_batch)}
            else:
                figures = trial(serving.qps)
                run = runs[serving.qps]
    finally:
        byes = pool.close()
    t = run.trace
    wall = (t.complete_ns.max() - t.arrival_ns.min()) / 1e9
    m = measurement_from(run, figures, pool, byes, [t.latency_ns.astype(np.int64)], wall, 1, extra)
    return m, ready[0]["outputs"]
