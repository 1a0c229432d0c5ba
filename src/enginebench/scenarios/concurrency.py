"""Closed-loop concurrency: N clients, each sending its next query the moment its last one returns, to
--workers sessions (one process each) behind one queue, swept over N (--concurrency 1,2,4), as serving
benchmarks measure saturation (Triton's perf_analyzer --concurrency-range). Achieved queries/s rises with N
until the workers are all busy; past that point only the latency grows, as Little's law says: N = X * R.

Latency is each query's, from the client's send to the answer's arrival in the measuring process (queueing
included); items/s is the clients' closed-loop rate (each client: items / its mean latency), with its
bootstrap CI, and the rate counted over the measured window is kept beside it (Result.throughput's
wall_items_per_s), so that X * R = N can be checked against two independent figures."""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import wait as wait_connections

import numpy as np

from enginebench.engines import engine_class
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.plan import Cell
from enginebench.scenarios.base import (CellRun, Grid, Measurement, Option, Scenario, ScenarioSettings,
                                        encoder_roofline_of, worker_args, workload_args)
from enginebench.scenarios.loadgen_sut import WorkerPool
from enginebench.scenarios.process_pool import POLL_S
from enginebench.scenarios.requests import endpoint_figures, endpoint_table, measure_requests
from enginebench.scenarios.server import percentiles
from enginebench.scenarios.throughput import worker_cells

DEFAULT_CLIENTS = (1, 2, 4)


@dataclass(frozen=True)
class Clients(ScenarioSettings):
    clients: int

    def label(self) -> str:
        return f"{self.clients} client{'' if self.clients == 1 else 's'}"


@dataclass
class ClosedLoop:
    """Every measured query: its client, sent and answered (ns, CLOCK_MONOTONIC in this process)."""

    client: np.ndarray
    sent_ns: np.ndarray
    done_ns: np.ndarray
    window_ns: int  # from the first measured send to the stop

    def latencies(self, clients: int) -> list[np.ndarray]:
        lat = self.done_ns - self.sent_ns
        return [lat[self.client == c].astype(np.int64) for c in range(clients)]


def closed_loop(pool: WorkerPool, clients: int, batch_size: int, rule: StoppingRule) -> ClosedLoop:
    """Drive the started pool with `clients` closed-loop clients: warm-up for rule.warmup_s, then measure until
    rule.duration_s has passed and every client has rule.min_samples answers. A query is kept when it was sent
    after the warm-up and answered before the stop, so every kept one ran under the full load."""
    items = pool.pool.size
    idle = deque(range(pool.size))
    waiting: deque = deque()  # (client, sent_ns): queued behind busy workers
    flying: dict[int, tuple[int, int, int]] = {}  # query id -> (client, sent_ns, worker)
    ids = itertools.count()
    kept: list[tuple[int, int, int]] = []
    per_client = [0] * clients
    start_ns = time.perf_counter_ns() + int(rule.warmup_s * 1e9)
    stop_ns = None

    def dispatch():
        while idle and waiting:
            client, sent = waiting.popleft()
            worker = idle.popleft()
            query = next(ids)
            rows = [(query * batch_size + i) % items for i in range(batch_size)]
            flying[query] = (client, sent, worker)
            pool.send(worker, query, rows)

    for c in range(clients):
        waiting.append((c, time.perf_counter_ns()))
    dispatch()
    while flying:
        for conn in wait_connections(pool.dones, timeout=POLL_S):
            msg = pool.recv(conn)
            now = time.perf_counter_ns()
            if msg[0] != "done":
                continue
            client, sent, worker = flying.pop(msg[1])
            idle.append(worker)
            if stop_ns is None and sent >= start_ns:
                kept.append((client, sent, now))
                per_client[client] += 1
            if stop_ns is None and now - start_ns >= rule.duration_s * 1e9 and min(per_client) >= rule.min_samples:
                stop_ns = now
            if stop_ns is None:
                waiting.append((client, time.perf_counter_ns()))
        dispatch()
        pool.check_alive()
    table = np.asarray(kept, dtype=np.int64).reshape(-1, 3)
    first = int(table[:, 1].min())
    return ClosedLoop(table[:, 0], table[:, 1], table[:, 2], window_ns=stop_ns - first)


def run_concurrency(load_session, workload, cell: Cell, rule: StoppingRule, fidelity_inputs=None,
                    on_loaded=None) -> tuple[Measurement, np.ndarray | None]:
    """One cell: `cell.workers` sessions, `cell.settings.clients` clients, queries of `cell.batch_size` items."""
    clients = cell.settings.clients
    pool = WorkerPool(load_session, workload.pool, cell.workers, cell.batch_size, 0.0, fidelity_inputs,
                      dynamic=workload.dynamic_padding)
    try:
        ready = pool.start()
        if on_loaded is not None:
            on_loaded()
        loop = closed_loop(pool, clients, cell.batch_size, rule)
    finally:
        byes = pool.close()
    first = ready[0]
    mask = pool.pool.attention_mask
    window_s = loop.window_ns / 1e9
    m = Measurement(
        worker_samples=loop.latencies(clients), items_per_call=cell.batch_size,
        tokens_per_item=float(mask.sum() / mask.shape[0]), load_s=max(r["load_s"] for r in ready),
        peak_rss_mb=sum(b.get("peak_rss_mb", 0.0) for b in byes), executed_precision=first["executed_precision"],
        wall_s=window_s,
        details={**first["details"], "worker_load_s": [round(r["load_s"], 3) for r in ready],
                 "queries": int(loop.client.size)},
    )
    return m, first["outputs"]


class Concurrency(Scenario):
    """Closed-loop clients swept over --concurrency, against --workers sessions behind one queue."""

    name = "concurrency"
    options = (Option("concurrency", "concurrency: closed-loop clients, each sending its next query when its "
                      "last returns; one cell per N, e.g. 1,2,4 [1,2,4]", metavar="N", many=True),)
    workers_load_sessions = True
    shows_workers = True
    judged_on = "throughput"
    uses_roofline = True
    drives_endpoint = True

    def settings(self, given: dict) -> list[Clients]:
        texts = [t for item in given.get("concurrency") or [] for t in str(item).split(",") if t.strip()]
        clients = []
        for text in texts:
            try:
                n = int(text)
            except ValueError:
                n = 0
            if n < 1:
                raise UsageError(f"--concurrency {text.strip()!r} is not a number of clients: give whole numbers "
                                 "from 1, e.g. --concurrency 1,2,4")
            clients.append(n)
        return [Clients(n) for n in dict.fromkeys(clients or DEFAULT_CLIENTS)]

    def settings_from_dict(self, d: dict) -> Clients:
        return Clients(**d)

    def table(self, result) -> str:
        return endpoint_table(result) or "encoders"

    frame_columns = {"clients": "Int64", "achieved_qps": "float64", "littles_law_clients": "float64"}

    def frame_values(self, result) -> dict:
        """The cell's clients, and in-process the queries/s achieved and the clients Little's law gives back."""
        figures = result.figures or {}
        return {"clients": self.settings_from_dict(result.settings).clients,
                "achieved_qps": figures.get("achieved_qps"), "littles_law_clients": figures.get("littles_law_clients")}

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        return (workload_args(result, corpus) + ["--batch-size", str(result.batch_size)] + worker_args(result)
                + ["--concurrency", str(self.settings_from_dict(result.settings).clients)])

    def cells(self, grid: Grid, settings: list[Clients] | None = None) -> list[Cell]:
        return [replace(cell, settings=s) for cell in worker_cells(self.name, grid)
                for s in settings or [Clients(n) for n in DEFAULT_CLIENTS]]

    def spread_clients(self, cell: Cell) -> int:
        return cell.settings.clients if engine_class(cell.engine).remote else 0

    def measure(self, run: CellRun) -> Measurement:
        if run.remote:  # a server: N closed-loop request clients
            return measure_requests(run, run.session(), clients=run.cell.settings.clients)
        return run.in_worker_processes(lambda want, loaded: run_concurrency(
            run.factory, run.workload, run.cell, run.rule, want, on_loaded=loaded))

    def figures(self, cell: Cell, measurements: list[Measurement], details: dict) -> dict:
        """Per query: p50, p90, p99 with their CIs; the achieved queries/s over the measured windows and the
        clients Little's law gives back from it (X * R: N when the loop was closed and nothing else waited)."""
        if found := endpoint_figures(measurements):
            found["figures"]["clients"] = cell.settings.clients
            return found
        pooled = np.concatenate([np.concatenate(m.worker_samples) for m in measurements]) / 1e6
        qps = float(np.mean([sum(s.size for s in m.worker_samples) / m.wall_s for m in measurements]))
        return {"figures": {"clients": cell.settings.clients, "latency_ms": percentiles(pooled),
                            "achieved_qps": qps, "littles_law_clients": qps * float(pooled.mean()) / 1e3},
                "roofline": encoder_roofline_of(cell, measurements, details)}


__all__ = ["Concurrency", "Clients", "closed_loop", "run_concurrency", "ClosedLoop"]
