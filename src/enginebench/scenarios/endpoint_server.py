"""LoadGen's Server scenario against a running server (--endpoint --scenario server --qps N): requests arrive
as LoadGen's Poisson process at N per second, each sent at once on a pool of client threads (one keep-alive
connection per thread), however many are still in flight: an open loop, so a server that falls behind shows
as a growing latency rather than a slower arrival rate.

LoadGen hears each request's completion (QuerySamplesComplete, with its output tokens for generation) and, for
generation, its first token (FirstTokenComplete: token latencies, judged against --slo-ttft and --slo-tpot
as LoadGen's p99s; embeddings against --slo-p99). Its percentiles count from the scheduled arrival; each
request's own record (scenarios/requests.py) counts from its send, as in the other scenarios, and the
table's figures come from those records. The verdict: LoadGen's VALID/INVALID, plus the rate achieved
against the rate scheduled.
"""

from __future__ import annotations

import itertools
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from enginebench.display import max_rate, significant
from enginebench.endpoint.client import Connection
from enginebench.measure.memory import peak_rss_mb
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.base import CellRun, Measurement
from enginebench.scenarios.loadgen_sut import loadgen_version, require_loadgen, set_seeds, start_test
from enginebench.scenarios.requests import (answered, client_ceiling, closed_loop_requests, count_tokens,
                                            endpoint_notes, failure_counts, request_inputs, served_fidelity)
from enginebench.scenarios.server import (FELL_BEHIND, SEARCH_START, find_max_qps, loadgen_reasons, loadgen_result,
                                          loadgen_seeds, more_queries_needed, over_searches)

CLIENT_THREADS = 64  # requests in flight at most; more wait in the pool's queue (their wait is in the latency)
# requests in flight while a --find-max-qps search estimates where to start: as many as a trial can have, so a
# server that batches shows it (Infinity on MiniLM: 123 req/s to 64 clients, 87 to 8, 50 to one; its answer at a
# 1 s p99 target was 143-158)
CAPACITY_CLIENTS = CLIENT_THREADS
_clock = time.perf_counter_ns


class RequestDispatcher:
    """LoadGen's SUT callbacks over a pool of request threads."""

    def __init__(self, session, items: list, max_tokens: int | None, threads: int = CLIENT_THREADS):
        self.session, self.items, self.max_tokens = session, items, max_tokens
        self.lg = require_loadgen()
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="enginebench-request")
        self.local = threading.local()
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.records: list[dict] = []
        self.error: str | None = None

    def issue(self, samples) -> None:
        now = _clock()
        for s in samples:
            self.pool.submit(self._one, s.id, s.index, now)

    def flush(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.pool.shutdown(wait=True)
        for conn in self.connections:
            conn.close()

    def _connection(self) -> tuple[int, Connection]:
        if not hasattr(self.local, "conn"):
            with self.lock:
                self.local.index = len(self.connections)
                self.local.conn = Connection(self.session.target)
                self.connections.append(self.local.conn)
        return self.local.index, self.local.conn

    def _one(self, query: int, index: int, issued_ns: int) -> None:
        lg, generates = self.lg, self.session.target.generates
        first = threading.Event()

        def on_first():
            first.set()
            lg.FirstTokenComplete([lg.QuerySampleResponse(query, 0, 0, 1)])

        tokens = 1
        try:
            client, conn = self._connection()
            item = index % len(self.items)
            record = conn.send(self.items[item], self.max_tokens, client=client, scheduled_ns=None,
                               on_first=on_first if generates else None)
            record.update(item=item, issued_ns=issued_ns)
            if generates and not record["failure"]:
                tokens = max(1, self.session.count_tokens(record.get("text", "")))
            with self.lock:
                self.records.append(record)
        except BaseException as e:  # a bug, not a failed request: LoadGen must still hear of the query
            self.error = self.error or f"{type(e).__name__}: {e}"
        finally:
            if generates and not first.is_set():  # a failed request: LoadGen needs its first token to end it
                lg.FirstTokenComplete([lg.QuerySampleResponse(query, 0, 0, 1)])
            lg.QuerySamplesComplete([lg.QuerySampleResponse(query, 0, 0, tokens)])


def loadgen_settings(lg, serving, generates: bool, qps: float, min_duration_s: float, min_queries: int,
                     seeds: dict, offline: bool = False):
    """LoadGen's TestSettings for one Server run (Poisson arrivals at `qps`) against the endpoint, or one
    Offline run (every request at once, as many as `qps` over the duration), and the same as a dict (recorded)."""
    ts = lg.TestSettings()
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(min_duration_s * 1000)
    ts.min_query_count = int(min_queries)
    set_seeds(ts, seeds)
    settings = {"mode": "PerformanceOnly", "min_duration_ms": ts.min_duration_ms,
                "min_query_count": ts.min_query_count, **seeds, "loadgen_version": loadgen_version()}
    if offline:
        ts.scenario = lg.TestScenario.Offline
        ts.offline_expected_qps = float(qps)
        return ts, {"scenario": "offline", "offline_expected_qps": float(qps), **settings}
    ts.scenario = lg.TestScenario.Server
    ts.server_target_qps = float(qps)
    settings = {"scenario": "server", "server_target_qps": float(qps), **settings, "use_token_latencies": generates}
    if generates:
        ts.use_token_latencies = True
        ts.ttft_latency = int(serving.slo_ttft_ms * 1e6)
        ts.tpot_latency = int(serving.slo_tpot_ms * 1e6)
        settings.update(ttft_latency_ns=ts.ttft_latency, tpot_latency_ns=ts.tpot_latency)
    else:
        ts.server_target_latency_ns = int(serving.slo_p99_ms * 1e6)
        settings["server_target_latency_ns"] = ts.server_target_latency_ns
    ts.server_target_latency_percentile = 0.99
    return ts, settings


@dataclass
class Trial:
    """One LoadGen run against the endpoint (Server at a rate, or Offline expecting one): its requests'
    records and LoadGen's report."""

    qps: float
    seeds: dict
    settings: dict
    summary: str
    log: dict
    records: list[dict]
    clients: int

    @property
    def window_ns(self) -> int:
        return max(1, max(r["done_ns"] for r in self.records) - min(r["issued_ns"] for r in self.records))

    @property
    def ok(self) -> list[dict]:
        return [r for r in self.records if not r["failure"]]

    @property
    def achieved_qps(self) -> float:
        return len(self.ok) / (self.window_ns / 1e9)

    @property
    def scheduled_qps(self) -> float:
        """The rate of this run's own Poisson schedule, as LoadGen reports it: a few hundred arrivals stray
        from the target by several % (what the rate achieved is held against)."""
        return float(self.log.get("result_scheduled_samples_per_sec") or self.qps)


def _run_trial(run: CellRun, session, items, tokens, max_tokens, qps: float, queries: int, seeds: dict,
               offline: bool = False) -> Trial:
    lg = require_loadgen()
    ts, settings = loadgen_settings(lg, run.cell.serving, session.target.generates, qps, run.rule.duration_s,
                                    queries, seeds, offline)
    run.trial_started(max(run.rule.duration_s, queries / qps))
    dispatcher = RequestDispatcher(session, items, max_tokens)
    with tempfile.TemporaryDirectory(prefix="enginebench-loadgen-") as outdir:
        summary, log = start_test(dispatcher, len(items), ts, outdir)
    if dispatcher.error:
        raise RuntimeError(f"the request threads failed: {dispatcher.error}")
    records = sorted(dispatcher.records, key=lambda r: r["sent_ns"])
    count_tokens(session, tokens, records)
    if not any(not r["failure"] for r in records):
        counts = {k: v for k, v in failure_counts(records).items() if v}
        raise RuntimeError(f"every request failed ({counts}): {records[0]['error'] if records else 'none sent'}")
    return Trial(qps, seeds, settings, summary, log, records, len(dispatcher.connections))


def _failed(records: list[dict]) -> list[str]:
    """`N of M requests failed (timeout 3, …)` when any did, by kind."""
    kinds = {k: v for k, v in failure_counts(records).items() if v}
    if not kinds:
        return []
    return [f"{sum(kinds.values())} of {len(records)} requests failed "
            f"({', '.join(f'{k} {v}' for k, v in kinds.items())})"]


def trial_verdict(trial: Trial, generates: bool) -> dict:
    """What --find-max-qps judges a trial by: VALID when LoadGen says VALID (its p99s from the scheduled
    arrival within the targets, early stopping satisfied), no request failed, and the server kept up with the
    arrivals; the figures find_max_qps keeps of each trial."""
    result = loadgen_result(trial.log)
    reasons = loadgen_reasons(result)
    said = len(reasons)
    reasons += _failed(trial.records)
    if trial.achieved_qps < FELL_BEHIND * trial.scheduled_qps:
        reasons.append(f"fell behind: achieved {significant(trial.achieved_qps)} req/s < {FELL_BEHIND:.0%} of the "
                       f"{trial.scheduled_qps:.4g} scheduled")
    keys = ({"ttft_p99_ms": "result_first_token_99.00_percentile_latency_ns",
             "tpot_p99_ms": "result_time_per_output_token_99.00_percentile_ns"} if generates else
            {"p99_ms": "result_99.00_percentile_latency_ns"})
    headline = {k: trial.log[key] / 1e6 for k, key in keys.items() if trial.log.get(key) is not None}
    return {"valid": not reasons, "reasons": reasons, "achieved_qps": trial.achieved_qps,
            "queries": len(trial.records), "seeds": trial.seeds, "headline": headline,
            "more_queries": more_queries_needed(result, reasons[said:])}


def measure_endpoint_server(run: CellRun, session) -> Measurement:
    """One server cell against the endpoint: a LoadGen Server run at --qps after a closed-loop warm-up, or with
    --find-max-qps the highest rate LoadGen judges VALID, searched as in-process (server.find_max_qps), each
    trial with its own arrival schedule; the cell's records are the highest VALID trial's."""
    rule, serving = run.rule, run.cell.serving
    generates = session.target.generates
    items, tokens, max_tokens, per_item = request_inputs(run, session)
    fidelity = served_fidelity(run, session)
    alone_ns = _warm_up(session, items, max_tokens, rule.warmup_s)
    min_queries = max(rule.min_samples, 1)
    trials: dict[float, Trial] = {}  # by rate: a rate run again with more queries keeps its last run
    runs = itertools.count()

    def trial(qps: float, queries: int | None = None) -> dict:
        seeds = loadgen_seeds(serving.seed, run.repetition, next(runs))  # each trial its own arrivals
        trials[qps] = _run_trial(run, session, items, tokens, max_tokens, qps, queries or min_queries, seeds)
        return trial_verdict(trials[qps], generates)

    search = None
    if serving.find_max_qps:
        capacity = {"capacity_estimate_qps": _one_client_rate(alone_ns),
                    "capacity_from": "one request at a time during the warm-up"}
        if not serving.qps and not generates:  # a generation's minutes-long requests would make it a trial of its own
            capacity = _capacity(session, items, max_tokens, alone_ns)
        found, best = find_max_qps(trial, serving.qps or SEARCH_START * capacity["capacity_estimate_qps"],
                                   serving.search_within, hopeless=lambda f: _alone_miss(f, alone_ns, serving, generates))
        chosen = trials[found.lo] if best is not None else trials[min(trials)]
        search = {**found.to_dict(), **capacity}
    else:
        trial(serving.qps)
        chosen = trials[serving.qps]
    records, log = chosen.records, chosen.log
    result = loadgen_result(log)
    achieved = chosen.achieved_qps
    p99 = {name: log.get(key) for name, key in (("e2e", "result_99.00_percentile_latency_ns"),
                                                ("TTFT", "result_first_token_99.00_percentile_latency_ns"),
                                                ("TPOT", "result_time_per_output_token_99.00_percentile_ns"))}
    said = ", ".join(f"{k} {significant(v / 1e6)} ms" for k, v in p99.items() if v is not None and
                     (generates or k == "e2e"))
    notes = [f"LoadGen {result.get('validity', 'gave no result')}: Poisson arrivals at {chosen.qps:.4g} req/s, "
             f"{chosen.clients} client threads used; achieved {significant(achieved)} req/s; LoadGen's p99 from the "
             f"scheduled arrival: {said or 'none'}"]
    if search:
        notes.insert(0, f"--find-max-qps: {max_rate(search)} req/s over {len(search['trials'])} trials"
                        + (f"; {search['stopped']}" if search.get("stopped") else ""))
    details = {**session.details, "requests": records, "window_ns": int(chosen.window_ns), "clients": chosen.clients,
               "loadgen": {"settings": chosen.settings, "summary": chosen.summary, "result": result, "log": log},
               "offered_qps": chosen.qps, "scheduled_qps": chosen.scheduled_qps, "achieved_qps": achieved,
               "notes": endpoint_notes(session) + notes}
    if search:
        details["find_max_qps"] = search
    details["client_ceiling"] = client_ceiling(run, session, items, max_tokens, chosen.clients)  # after the clock
    if achieved < FELL_BEHIND * chosen.scheduled_qps:
        details["notes"].append(f"fell behind: achieved {significant(achieved)} req/s < {FELL_BEHIND:.0%} of the "
                                f"{chosen.scheduled_qps:.4g} scheduled")
    return _measurement(run, session, chosen, per_item, details, fidelity)


def _measurement(run: CellRun, session, trial: Trial, per_item: int, details: dict, fidelity) -> Measurement:
    """A cell's Measurement from the trial it keeps: per client thread, its answered requests' times."""
    ok = trial.ok
    per_client = [np.asarray([r["done_ns"] - r["sent_ns"] for r in ok if r["client"] == c], dtype=np.int64)
                  for c in range(trial.clients)]
    return Measurement(worker_samples=[s for s in per_client if s.size], items_per_call=per_item,
                       tokens_per_item=float(np.mean([r["input_tokens"] for r in ok])) / per_item,
                       load_s=session.load_s, peak_rss_mb=peak_rss_mb(), executed_precision=run.precision,
                       wall_s=trial.window_ns / 1e9, details=details, fidelity=fidelity)


def measure_endpoint_offline(run: CellRun, session) -> Measurement:
    """One offline cell against the endpoint: LoadGen's Offline issues every request at once and the client
    threads (CLIENT_THREADS) send them as fast as the server answers; the figure is the requests answered per
    second over the run. LoadGen sizes the run as the expected rate times --duration: the rate one client
    reached back to back in the warm-up, and when the server was faster than that and ended early, the run is
    made once more at the rate it achieved."""
    rule, seed = run.rule, run.cell.serving.seed if run.cell.serving else 0
    items, tokens, max_tokens, per_item = request_inputs(run, session)
    fidelity = served_fidelity(run, session)
    expected = _one_client_rate(_warm_up(session, items, max_tokens, rule.warmup_s))
    min_queries = max(rule.min_samples, 1)
    trial = _run_trial(run, session, items, tokens, max_tokens, expected, min_queries,
                       loadgen_seeds(seed, run.repetition, 0), offline=True)
    if loadgen_result(trial.log).get("min_duration_met") is False:
        expected = 1.2 * trial.achieved_qps  # LoadGen's own advice: a higher expected rate, a longer run
        trial = _run_trial(run, session, items, tokens, max_tokens, expected, min_queries,
                           loadgen_seeds(seed, run.repetition, 1), offline=True)
    result = loadgen_result(trial.log)
    notes = [f"LoadGen {result.get('validity', 'gave no result')}: {len(trial.records)} requests issued at once "
             f"(expected {significant(expected)} req/s over {rule.duration_s:g} s), {trial.clients} client "
             f"threads; {significant(trial.achieved_qps)} req/s answered"]
    details = {**session.details, "requests": trial.records, "window_ns": int(trial.window_ns),
               "clients": trial.clients, "offline": True, "expected_qps": expected,
               "loadgen": {"settings": trial.settings, "summary": trial.summary, "result": result, "log": trial.log},
               "offered_qps": None, "achieved_qps": trial.achieved_qps, "notes": endpoint_notes(session) + notes,
               "client_ceiling": client_ceiling(run, session, items, max_tokens, trial.clients)}  # after the clock
    return _measurement(run, session, trial, per_item, details, fidelity)


def _one_client_rate(alone_ns: list[int]) -> float:
    """Requests/s of one client sending one request at a time, from the warm-up's times."""
    return 1e9 / float(np.median(alone_ns))


def _capacity(session, items: list, max_tokens: int | None, alone_ns: list[int]) -> dict:
    """Where an embeddings search without --qps starts from: the requests/s the server answered back to back, to
    one client (the warm-up) and to CAPACITY_CLIENTS closed-loop clients for a second or three requests' time, the
    higher. One client alone would start a batching server's search far below its answer, where trials are
    longest (a trial lasts its queries at its rate); an overloaded trial ends about when the server has answered
    them."""
    one = _one_client_rate(alone_ns)
    rule = StoppingRule(duration_s=max(1.0, 3 / one), min_samples=1, warmup_s=0.2)
    ok, window_s = answered(closed_loop_requests(session, items, CAPACITY_CLIENTS, rule, max_tokens))
    many = len(ok) / window_s if window_s > 0 else 0.0
    return {"capacity_estimate_qps": max(one, many), "capacity_one_client_qps": one,
            "capacity_from": (f"{CAPACITY_CLIENTS} clients back to back for {window_s:.1f} s during the warm-up: "
                              f"{significant(many)} req/s ({len(ok)} answered; one client alone "
                              f"{significant(one)} req/s)")}


def _alone_miss(verdict: dict, alone_ns: list[int], serving, generates: bool) -> str | None:
    """Why no lower rate can be VALID: one request alone, with nothing queued beside it (the warm-up), already
    takes longer than the p99 target (embeddings; generation's targets are per token: the search goes on)."""
    if generates or verdict["valid"] or serving.slo_p99_ms is None:
        return None
    alone_ms = 1e3 / _one_client_rate(alone_ns)
    if alone_ms > serving.slo_p99_ms:
        return (f"one request alone takes {significant(alone_ms)} ms (median of the warm-up) > the "
                f"{serving.slo_p99_ms:g} ms target: no lower rate can meet it")
    return None


def _warm_up(session, items: list, max_tokens: int | None, warmup_s: float) -> list[int]:
    """One request at a time for `warmup_s` (at least one): a server that loads or compiles lazily does it now.
    Returns each successful request's time (ns), the first left out when there are more."""
    conn = Connection(session.target)
    took = []
    try:
        deadline = time.perf_counter() + warmup_s
        k = 0
        while k == 0 or time.perf_counter() < deadline:
            record = conn.send(items[k % len(items)], max_tokens)
            if not record["failure"]:
                took.append(record["done_ns"] - record["sent_ns"])
            k += 1
    finally:
        conn.close()
    if not took:
        raise RuntimeError(f"every warm-up request failed: {record['error']}")
    return took[1:] or took


def endpoint_served(measurements: list[Measurement]) -> dict:
    """Server.served() for an endpoint cell: LoadGen's verdict and the rate achieved against the scheduled."""
    reasons = []
    for m in measurements:
        reasons += loadgen_reasons(m.details["loadgen"]["result"])
        reasons += _failed(m.details["requests"])  # LoadGen counts a failed request as answered
        scheduled = m.details.get("scheduled_qps") or m.details["offered_qps"]  # older results: the target
        if scheduled and m.details["achieved_qps"] < FELL_BEHIND * scheduled:
            reasons.append(f"fell behind: achieved {significant(m.details['achieved_qps'])} req/s of "
                           f"{scheduled:.4g} scheduled")
    rate = float(np.mean([m.details["achieved_qps"] for m in measurements]))
    throughput = {"items_per_s": rate * measurements[0].items_per_call,
                  "tokens_per_s": rate * measurements[0].items_per_call * measurements[0].tokens_per_item,
                  "ci95": None, "wall_items_per_s": rate * measurements[0].items_per_call}
    serving = {"kind": "endpoint", "achieved_qps": rate, "offered_qps": measurements[0].details["offered_qps"],
               "loadgen": [m.details["loadgen"]["result"] for m in measurements]}
    if measurements[0].details.get("offline"):
        serving.update(all_at_once=True, clients=measurements[0].details["clients"])
    searches = [m.details["find_max_qps"] for m in measurements if m.details.get("find_max_qps")]
    if searches:
        serving["find_max_qps"] = over_searches(searches)
        for s in searches:
            if not s.get("max_qps"):  # the cell's records are then the lowest rate tried, INVALID
                reasons.insert(0, f"--find-max-qps: {s.get('stopped') or 'no rate tried was VALID'}")
    return {"serving": serving, "throughput": throughput, "reasons": list(dict.fromkeys(reasons))}


__all__ = ["measure_endpoint_server", "measure_endpoint_offline", "trial_verdict", "endpoint_served", "RequestDispatcher", "CLIENT_THREADS"]
