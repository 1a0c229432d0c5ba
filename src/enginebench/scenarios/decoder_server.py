"""The server scenario for decoders (LLMs): generation requests arrive as a Poisson process (LoadGen's Server
scenario with token latencies, as MLPerf's LLM benchmarks run it) and are served by worker processes, each
holding a session; time to first token (TTFT) and time per output token (TPOT) are judged against their
targets at the 99th percentile.

Each request is one prompt of the prompt set (`prompt_len` tokens) and `gen_len` greedy tokens, served by the
worker processes of decoder_workers.py (continuous or static batching, recorded with the result).

LoadGen is told of each request's first token (FirstTokenComplete) and of its completion with its token count
(QuerySamplesComplete), and computes its own TTFT/TPOT percentiles, early-stopping estimates and VALID/INVALID;
its summary and detail log are kept with the result. The figures here come from the trace of every request
(arrival, admission to a worker, first token, completion, all on CLOCK_MONOTONIC): TTFT from arrival, queueing
included; TPOT = (completion - first token) / (gen_len - 1), as LoadGen counts it.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_connections

import numpy as np

from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell, Serving
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.decoder_workers import DecoderWorkers, Request
from enginebench.scenarios.loadgen_sut import loadgen_version, require_loadgen, set_seeds, start_test
from enginebench.scenarios.server import (FELL_BEHIND, LATENCY_KEY, MIN_QUERIES_P99, QUEUEING_SHARE,
                                          expected_run_s, find_max_qps, loadgen_percentiles, loadgen_reasons,
                                          loadgen_seeds, more_queries_needed, percentiles, poisson_rate_ci,
                                          queue_depth, run_seeds, serving_min_queries)

_POLL_S = 0.2
SEARCH_START = 0.7  # of the capacity the warm-up suggests, when --qps does not say where to start


# -- one LoadGen run --------------------------------------------------------------------------------------------
@dataclass
class TokenTrace:
    """Every request of one run, ns on CLOCK_MONOTONIC, in completion order."""

    arrival_ns: np.ndarray
    admitted_ns: np.ndarray  # its prefill started on a worker
    first_ns: np.ndarray  # the parent heard of its first token (when LoadGen was told)
    complete_ns: np.ndarray
    running: np.ndarray  # sequences on its worker when it was admitted, itself included
    worker: np.ndarray


class TokenDispatcher:
    """LoadGen's callbacks: each request goes to the worker with the fewest outstanding; a responder thread
    passes first tokens and completions on to LoadGen as the workers report them."""

    def __init__(self, workers: DecoderWorkers, gen_len: int, prompt_count: int):
        self.workers, self.gen_len, self.prompt_count = workers, gen_len, prompt_count
        self.outstanding = [0] * workers.size
        self.requests: dict[int, list] = {}  # query id -> [arrival, admitted, first, worker, running]
        self.rows: list[tuple] = []
        self.error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._respond, daemon=True)

    def issue(self, samples) -> None:
        now = time.perf_counter_ns()
        for s in samples:
            with self._lock:
                w = min(range(len(self.outstanding)), key=self.outstanding.__getitem__)
                self.outstanding[w] += 1
                self.requests[s.id] = [now, 0, 0, w, 0]
            if self.error is not None:
                self._finish([s.id], first=True)
                continue
            self.workers.tasks[w].send(Request(s.id, s.index % self.prompt_count, now))

    def flush(self) -> None:
        pass

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _respond(self) -> None:
        while not self._stop.is_set():
            for conn in wait_connections(self.workers.dones, timeout=_POLL_S):
                try:
                    msg = self.workers.recv(conn)
                except RuntimeError as e:
                    self._fail(str(e))
                    continue
                if msg[0] == "first":
                    self._first(msg[1], msg[2], msg[3])
                elif msg[0] == "done":
                    self._finish(msg[1])
            try:
                self.workers.check_alive()
            except RuntimeError as e:
                self._fail(str(e))

    def _first(self, ids, admitted: int, running: int) -> None:
        import mlperf_loadgen as lg

        lg.FirstTokenComplete([lg.QuerySampleResponse(q, 0, 0, 1) for q in ids])
        now = time.perf_counter_ns()
        for q in ids:
            entry = self.requests[q]
            entry[1], entry[2], entry[4] = admitted, now, running

    def _finish(self, ids, first: bool = False) -> None:
        import mlperf_loadgen as lg

        if first:  # a failed run: LoadGen must hear of every token to end
            lg.FirstTokenComplete([lg.QuerySampleResponse(q, 0, 0, 1) for q in ids])
        lg.QuerySamplesComplete([lg.QuerySampleResponse(q, 0, 0, self.gen_len) for q in ids])
        now = time.perf_counter_ns()
        with self._lock:
            for q in ids:
                arrival, admitted, first_ns, w, running = self.requests.pop(q)
                self.outstanding[w] -= 1
                self.rows.append((arrival, admitted, first_ns or now, now, running, w))

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        with self._lock:
            pending = [(q, e[2] == 0) for q, e in self.requests.items()]
        for q, no_first in pending:
            self._finish([q], first=no_first)

    def trace(self) -> TokenTrace:
        a = np.asarray(self.rows, dtype=np.int64).reshape(-1, 6)
        return TokenTrace(*(a[:, k] for k in range(6)))


@dataclass
class TokenRun:
    trace: TokenTrace
    settings: dict
    log: dict
    summary: str


def run_token_loadgen(workers: DecoderWorkers, *, outdir: str, gen_len: int, prompt_count: int, qps: float,
                      ttft_ms: float, tpot_ms: float, min_duration_s: float, min_queries: int, seeds: dict) -> TokenRun:
    """One LoadGen Server PerformanceOnly run with token latencies."""
    lg = require_loadgen()
    settings = {"scenario": "server", "mode": "PerformanceOnly", "use_token_latencies": True,
                "server_target_qps": float(qps), "ttft_latency_ns": int(ttft_ms * 1e6),
                "tpot_latency_ns": int(tpot_ms * 1e6), "server_target_latency_percentile": 0.99,
                "min_duration_ms": int(min_duration_s * 1000), "min_query_count": int(min_queries),
                **seeds, "loadgen_version": loadgen_version()}
    ts = lg.TestSettings()
    ts.scenario = lg.TestScenario.Server
    ts.mode = lg.TestMode.PerformanceOnly
    ts.server_target_qps = float(qps)
    ts.use_token_latencies = True
    ts.ttft_latency = settings["ttft_latency_ns"]
    ts.tpot_latency = settings["tpot_latency_ns"]
    ts.server_target_latency_percentile = 0.99
    ts.min_duration_ms = settings["min_duration_ms"]
    ts.min_query_count = settings["min_query_count"]
    set_seeds(ts, seeds)
    dispatcher = TokenDispatcher(workers, gen_len, prompt_count)
    summary, log = start_test(dispatcher, prompt_count, ts, outdir)
    return TokenRun(dispatcher.trace(), settings, log, summary)


# -- figures ---------------------------------------------------------------------------------------------------
_LOADGEN_KEYS = ("result_validity", "result_invalid_reason", "result_min_duration_met", "result_min_queries_met",
                 "result_perf_constraints_met", "early_stopping_met", "early_stopping_ttft_result",
                 "early_stopping_tpot_result", "result_query_count", "result_scheduled_samples_per_sec",
                 "result_completed_samples_per_sec", "result_completed_tokens_per_second",
                 "result_first_token_50.00_percentile_latency_ns", "result_first_token_99.00_percentile_latency_ns",
                 "result_time_per_output_token_50.00_percentile_ns",
                 "result_time_per_output_token_99.00_percentile_ns", "result_99.00_percentile_latency_ns")


_LOADGEN_PERCENTILES = {"ttft_ms": "result_first_token_{q}.00_percentile_latency_ns",
                        "tpot_ms": "result_time_per_output_token_{q}.00_percentile_ns", "latency_ms": LATENCY_KEY}


def token_loadgen_result(log: dict) -> dict:
    return {k.removeprefix("result_"): log[k] for k in _LOADGEN_KEYS if k in log}


def _early_stopping_text(result: dict) -> str:
    texts = [f"{name}: " + " ".join(str(result[key]).replace("*", "").split())
             for name, key in (("TTFT", "early_stopping_ttft_result"), ("TPOT", "early_stopping_tpot_result"))
             if str(result.get(key) or "").strip()]
    return "; ".join(texts)


def decoder_server_figures(run: TokenRun, qps: float, serving: Serving, gen_len: int) -> dict:
    """Every figure of one run, and its verdict: VALID when LoadGen says VALID, TTFT and TPOT p99 are within
    their targets, there were enough requests for a p99, and the workers kept up with the arrivals."""
    t = run.trace
    n = int(t.arrival_ns.size)
    ttft = (t.first_ns - t.arrival_ns) / 1e6
    tpot = (t.complete_ns - t.first_ns) / 1e6 / max(1, gen_len - 1)
    latency = (t.complete_ns - t.arrival_ns) / 1e6
    wait = (t.admitted_ns - t.arrival_ns) / 1e6
    span_s = (t.complete_ns.max() - t.arrival_ns.min()) / 1e9
    achieved = float(n / span_s)
    result = token_loadgen_result(run.log)
    scheduled = float(result.get("scheduled_samples_per_sec") or qps)
    own = {"ttft_ms": percentiles(ttft), "tpot_ms": percentiles(tpot), "latency_ms": percentiles(latency)}
    loadgens = {name: loadgen_percentiles(run.log, own[name], key) for name, key in _LOADGEN_PERCENTILES.items()}
    figures = {name: value for name, (value, _) in loadgens.items()}
    figures.update({f"issue_{name}": value for name, value in own.items()})  # enginebench's, beside
    reasons = loadgen_reasons({k: v for k, v in result.items() if not k.startswith("early_stopping_t")})
    early = _early_stopping_text(result)
    if result.get("early_stopping_met") is False and early and reasons:
        reasons[0] = reasons[0].rstrip(")") + f"; {early})"
    said = len(reasons)
    if n < MIN_QUERIES_P99:
        reasons.append(f"only {n} requests: a p99 needs >= {MIN_QUERIES_P99} (LoadGen's early-stopping minimum); "
                       "raise --min-samples or --duration")
    for name, key, slo in (("TTFT", "ttft_ms", serving.slo_ttft_ms), ("TPOT", "tpot_ms", serving.slo_tpot_ms)):
        p99 = figures[key]["p99"]["value"]
        if p99 > slo:
            reasons.append(f"SLO missed: {name} p99 {p99:.3g} ms > {slo:g} ms")
    if achieved < FELL_BEHIND * scheduled:
        reasons.append(f"fell behind: achieved {achieved:.4g} req/s < {FELL_BEHIND:.0%} of the {scheduled:.4g} req/s "
                       "scheduled")
    queue = queue_depth(t.arrival_ns, t.complete_ns)
    in_service = len(np.unique(t.worker)) * serving.max_batch
    if queue["last_quarter_mean"] > 2 * queue["first_quarter_mean"] + 2 * in_service:
        reasons.append(f"queue grew: {queue['last_quarter_mean']:.3g} requests in the system over the last quarter "
                       f"of the arrivals vs {queue['first_quarter_mean']:.3g} over the first")
    decoding_s = float(((t.complete_ns - t.first_ns) / 1e9).sum())
    return {
        "scenario": "server", "kind": "decoder", "target_qps": qps, "slo_ttft_ms": serving.slo_ttft_ms,
        "slo_tpot_ms": serving.slo_tpot_ms, "queries": n, "gen_len": gen_len,
        "achieved_qps": achieved, "scheduled_qps": scheduled, "achieved_qps_ci95": poisson_rate_ci(n, span_s),
        "output_tokens_per_s": achieved * gen_len, **figures, "percentiles_from": loadgens["ttft_ms"][1],
        "wait_ms": {"p50": float(np.percentile(wait, 50)), "p99": float(np.percentile(wait, 99))},
        "queue": queue,
        "batching": {"running_at_admission": {"mean": float(t.running.mean()), "max": int(t.running.max())},
                     "mean_decoding": float(decoding_s / span_s)},  # sequences decoding at once, on average
        "loadgen": result, "seeds": run_seeds(run), "valid": not reasons, "reasons": reasons,
        "more_queries": more_queries_needed(result, reasons[said:]),
        "hopeless": _hopeless(figures, wait, serving),
        "headline": {"ttft_p99_ms": figures["ttft_ms"]["p99"]["value"],
                     "tpot_p99_ms": figures["tpot_ms"]["p99"]["value"]},
    }


def _hopeless(figures: dict, wait_ms: np.ndarray, serving: Serving) -> str | None:
    """Why a lower rate cannot help, or None: a target missed with little queueing (the calls alone miss it).
    Judged on enginebench's own figures, from issue, as the waits are (see server.calls_alone_miss)."""
    wait99 = float(np.percentile(wait_ms, 99))
    ttft99, tpot99 = figures["issue_ttft_ms"]["p99"]["value"], figures["issue_tpot_ms"]["p99"]["value"]
    if ttft99 > serving.slo_ttft_ms and wait99 < QUEUEING_SHARE * ttft99:
        return (f"TTFT p99 {ttft99:.3g} ms > {serving.slo_ttft_ms:g} ms with little queueing (p99 wait "
                f"{wait99:.3g} ms): a prefill alone misses the target")
    if tpot99 > serving.slo_tpot_ms and wait99 < QUEUEING_SHARE * ttft99 and serving.max_batch == 1:
        return f"TPOT p99 {tpot99:.3g} ms > {serving.slo_tpot_ms:g} ms one request at a time: a decode step alone misses it"
    return None


def capacity_estimate(ready: list[dict], gen_len: int, max_batch: int) -> float:
    """Requests/s the workers could serve back to back, from their warm-up times: a batch of max_batch
    requests costs their prefills and gen_len - 1 decode steps at that batch size."""
    total = 0.0
    for report in ready:
        service = {int(k): v for k, v in report["service_ms"].items()}
        at = service[max_batch]
        total += max_batch * 1e3 / (max_batch * at["prefill"] + (gen_len - 1) * at["decode"])
    return total


# -- the scenario -------------------------------------------------------------------------------------------
def run_decoder_server(load_session, prompts, cell: Cell, rule: StoppingRule, reference=None, precision="fp32",
                       on_loaded=None, repetition: int = 0, on_trial=None) -> Measurement:
    """One decoder server cell: a LoadGen Server run at `cell.serving.qps`, or the --find-max-qps search. The
    Measurement's samples are every request's latency from arrival to its last token (ns); details hold
    every request's TTFT and TPOT (ns) and the serving figures."""
    serving: Serving = cell.serving
    test = prompts.test
    workers = DecoderWorkers(load_session, prompts.prompts, test.gen_len, cell.workers, serving.max_batch,
                             serving.max_wait_ms, rule.warmup_s, reference, precision)
    byes: list[dict] = []
    try:
        ready = workers.start()
        if on_loaded is not None:
            on_loaded()
        with tempfile.TemporaryDirectory(prefix="enginebench-loadgen-") as outdir:
            runs: dict[float, TokenRun] = {}  # by rate: the last run at each
            count = [0]

            def trial(qps: float, min_queries: int | None = None) -> dict:
                if on_trial is not None:
                    on_trial(expected_run_s(rule.duration_s, min_queries or serving_min_queries(rule), qps))
                run = run_token_loadgen(workers, outdir=outdir, gen_len=test.gen_len,
                                        prompt_count=len(prompts.prompts), qps=qps, ttft_ms=serving.slo_ttft_ms,
                                        tpot_ms=serving.slo_tpot_ms, min_duration_s=rule.duration_s,
                                        min_queries=min_queries or serving_min_queries(rule),
                                        seeds=loadgen_seeds(serving.seed, repetition, count[0]))
                count[0] += 1
                runs[qps] = run
                return decoder_server_figures(run, qps, serving, test.gen_len)

            extra = {}
            capacity = capacity_estimate(ready, test.gen_len, serving.max_batch)
            if serving.find_max_qps:
                search, figures = find_max_qps(trial, serving.qps or SEARCH_START * capacity,
                                               serving.search_within, hopeless=lambda f: f["hopeless"])
                if figures is None:
                    lowest = min(t["qps"] for t in search.trials)
                    figures = decoder_server_figures(runs[lowest], lowest, serving, test.gen_len)
                    why = search.stopped or f"no rate tried was VALID (lowest {lowest:.4g} req/s)"
                    figures["reasons"] = [f"--find-max-qps: {why}"] + figures["reasons"]
                extra["find_max_qps"] = {**search.to_dict(), "capacity_estimate_qps": capacity}
            else:
                figures = trial(serving.qps)
            run = runs[figures["target_qps"]]
    finally:
        byes = workers.close()
    t = run.trace
    first = ready[0]
    figures["batching"]["mode"] = first["batching"]
    figures["batching"]["warmup_service_ms"] = {str(k): v for k, v in first["service_ms"].items()}
    m = Measurement(
        worker_samples=[(t.complete_ns - t.arrival_ns).astype(np.int64)], items_per_call=1,
        tokens_per_item=float(test.gen_len), load_s=max(r["load_s"] for r in ready),
        peak_rss_mb=sum(b.get("peak_rss_mb", 0.0) for b in byes), executed_precision=first["executed_precision"],
        wall_s=(t.complete_ns.max() - t.arrival_ns.min()) / 1e9,
        details={**first["details"], "worker_load_s": [round(r["load_s"], 3) for r in ready],
                 "test": test.name, "prompt_len": test.prompt_len, "gen_len": test.gen_len,
                 "ttft_ns": (t.first_ns - t.arrival_ns).tolist(), "tpot_ns": ((t.complete_ns - t.first_ns)
                                                                            // max(1, test.gen_len - 1)).tolist(),
                 "serving": figures, **extra,
                 "loadgen": {"settings": run.settings, "summary": run.summary, "log": run.log}},
    )
    m.fidelity = first["fidelity"]
    return m


__all__ = ["run_decoder_server", "decoder_server_figures", "capacity_estimate", "DecoderWorkers", "TokenTrace",
           "TokenRun"]
