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

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from enginebench.display import significant
from enginebench.endpoint.client import Connection
from enginebench.measure.memory import peak_rss_mb
from enginebench.scenarios.base import CellRun, Measurement
from enginebench.scenarios.loadgen_sut import loadgen_version, require_loadgen, set_seeds, start_test
from enginebench.scenarios.requests import (count_tokens, endpoint_notes, failure_counts, request_inputs,
                                            served_fidelity)
from enginebench.scenarios.server import FELL_BEHIND, loadgen_result, loadgen_seeds

CLIENT_THREADS = 64  # requests in flight at most; more wait in the pool's queue (their wait is in the latency)
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
                     seeds: dict):
    """LoadGen's TestSettings for one Server run against the endpoint, and the same as a dict (recorded)."""
    ts = lg.TestSettings()
    ts.scenario = lg.TestScenario.Server
    ts.mode = lg.TestMode.PerformanceOnly
    ts.server_target_qps = float(qps)
    ts.min_duration_ms = int(min_duration_s * 1000)
    ts.min_query_count = int(min_queries)
    set_seeds(ts, seeds)
    settings = {"scenario": "server", "mode": "PerformanceOnly", "server_target_qps": float(qps),
                "min_duration_ms": ts.min_duration_ms, "min_query_count": ts.min_query_count, **seeds,
                "loadgen_version": loadgen_version(), "use_token_latencies": generates}
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


def measure_endpoint_server(run: CellRun, session) -> Measurement:
    """One server cell against the endpoint: a LoadGen Server run at --qps, after a closed-loop warm-up."""
    lg = require_loadgen()
    cell, rule, serving = run.cell, run.rule, run.cell.serving
    items, tokens, max_tokens, per_item = request_inputs(run, session)
    fidelity = served_fidelity(run, session)
    _warm_up(session, items, max_tokens, rule.warmup_s)
    seeds = loadgen_seeds(serving.seed, run.repetition, 0)
    min_queries = max(rule.min_samples, 1)
    ts, settings = loadgen_settings(lg, serving, session.target.generates, serving.qps, rule.duration_s,
                                    min_queries, seeds)
    run.trial_started(max(rule.duration_s, min_queries / serving.qps))
    dispatcher = RequestDispatcher(session, items, max_tokens)
    with tempfile.TemporaryDirectory(prefix="enginebench-loadgen-") as outdir:
        summary, log = start_test(dispatcher, len(items), ts, outdir)
    records = sorted(dispatcher.records, key=lambda r: r["sent_ns"])
    count_tokens(session, tokens, records)
    ok = [r for r in records if not r["failure"]]
    if not ok:
        counts = {k: v for k, v in failure_counts(records).items() if v}
        raise RuntimeError(f"every request failed ({counts}): {records[0]['error'] if records else 'none sent'}")
    first, last = min(r["issued_ns"] for r in records), max(r["done_ns"] for r in records)
    window_ns = max(1, last - first)
    result = loadgen_result(log)
    achieved = len(ok) / (window_ns / 1e9)
    p99 = {name: log.get(key) for name, key in (("e2e", "result_99.00_percentile_latency_ns"),
                                                ("TTFT", "result_first_token_99.00_percentile_latency_ns"),
                                                ("TPOT", "result_time_per_output_token_99.00_percentile_ns"))}
    said = ", ".join(f"{k} {significant(v / 1e6)} ms" for k, v in p99.items() if v is not None and
                     (session.target.generates or k == "e2e"))
    details = {**session.details, "requests": records, "window_ns": int(window_ns), "clients": len(dispatcher.connections),
               "loadgen": {"settings": settings, "summary": summary, "result": result, "log": log},
               "offered_qps": serving.qps, "achieved_qps": achieved,
               "notes": endpoint_notes(session) + [f"LoadGen {result.get('validity', 'gave no result')}: Poisson arrivals at {serving.qps:g} "
                         f"req/s, {len(dispatcher.connections)} client threads used; achieved {significant(achieved)} req/s; LoadGen's "
                         f"p99 from the scheduled arrival: {said or 'none'}"]}
    if achieved < FELL_BEHIND * serving.qps:
        details["notes"].append(f"fell behind: achieved {significant(achieved)} req/s < {FELL_BEHIND:.0%} of the "
                                f"{serving.qps:g} scheduled")
    per_client = [np.asarray([r["done_ns"] - r["sent_ns"] for r in ok if r["client"] == c], dtype=np.int64)
                  for c in range(len(dispatcher.connections))]
    return Measurement(worker_samples=[s for s in per_client if s.size], items_per_call=per_item,
                       tokens_per_item=float(np.mean([r["input_tokens"] for r in ok])) / per_item,
                       load_s=session.load_s, peak_rss_mb=peak_rss_mb(), executed_precision=run.precision,
                       wall_s=window_ns / 1e9, details=details, fidelity=fidelity)


def _warm_up(session, items: list, max_tokens: int | None, warmup_s: float) -> None:
    """One request at a time for `warmup_s` (at least one): a server that loads or compiles lazily does it now."""
    conn = Connection(session.target)
    try:
        deadline = time.perf_counter() + warmup_s
        k = 0
        while k == 0 or time.perf_counter() < deadline:
            conn.send(items[k % len(items)], max_tokens)
            k += 1
    finally:
        conn.close()


def endpoint_served(measurements: list[Measurement]) -> dict:
    """Server.served() for an endpoint cell: LoadGen's verdict and the rate achieved against the scheduled."""
    reasons = []
    for m in measurements:
        result = m.details["loadgen"]["result"]
        if result.get("validity") != "VALID":
            why = result.get("invalid_reason") or ", ".join(
                k for k in ("min_duration_met", "min_queries_met", "perf_constraints_met", "early_stopping_met")
                if result.get(k) is False)
            reasons.append(f"LoadGen: {result.get('validity', 'no result')}" + (f" ({why})" if why else ""))
        if m.details["achieved_qps"] < FELL_BEHIND * m.details["offered_qps"]:
            reasons.append(f"fell behind: achieved {significant(m.details['achieved_qps'])} req/s of "
                           f"{m.details['offered_qps']:g} scheduled")
    rate = float(np.mean([m.details["achieved_qps"] for m in measurements]))
    throughput = {"items_per_s": rate * measurements[0].items_per_call,
                  "tokens_per_s": rate * measurements[0].items_per_call * measurements[0].tokens_per_item,
                  "ci95": None, "wall_items_per_s": rate * measurements[0].items_per_call}
    serving = {"kind": "endpoint", "achieved_qps": rate, "offered_qps": measurements[0].details["offered_qps"],
               "loadgen": [m.details["loadgen"]["result"] for m in measurements]}
    return {"serving": serving, "throughput": throughput, "reasons": list(dict.fromkeys(reasons))}


__all__ = ["measure_endpoint_server", "endpoint_served", "RequestDispatcher", "CLIENT_THREADS"]
