"""What MLPerf LoadGen drives: the system under test (worker processes, each holding a session, fed by a
dynamic batcher) and the query sample library (the workload's pool of inputs).

LoadGen issues the queries and owns the arrivals' clock; this module serves them and records, for every
query, when it arrived (LoadGen's issue callback), when its batch was dispatched to a worker and when it
completed, all on CLOCK_MONOTONIC (`perf_counter_ns`), comparable across processes.

The batcher works as Triton's and TorchServe's do: when a worker is free it takes the oldest queued query and
waits, at most until that query has waited `max_wait`, for more to fill a batch of `max_batch`; a batch never
waits for queries while a worker is free past that deadline. With `max_batch` 1 it is a plain FIFO queue
served by the workers (an M/G/c queue under Poisson arrivals).
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_connections

import numpy as np

from enginebench.errors import UsageError
from enginebench.measure.memory import peak_rss_mb, start_peak_window
from enginebench.scenarios.process_pool import POLL_S, STOP, ProcessPool
from enginebench.workloads import TokenBatch

_STOP = STOP
_POLL_S = POLL_S


def require_loadgen():
    try:
        import mlperf_loadgen
    except ImportError:
        raise UsageError("the server and offline scenarios need MLPerf LoadGen: "
                         "pip install 'enginebench[loadgen]'") from None
    return mlperf_loadgen


def loadgen_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlcommons-loadgen")
    except PackageNotFoundError:
        return None


def rows_batch(pool: TokenBatch, rows, dynamic: bool = False) -> TokenBatch:
    """The pool items at `rows` as one batch (what a server concatenates from the queued requests); `dynamic`:
    cut to its longest input (--padding dynamic)."""
    batch = pool.take(rows)
    return batch.trimmed() if dynamic else batch


# -- the workers ----------------------------------------------------------------------------------------------
def _warm_up(session, pool: TokenBatch, max_batch: int, warmup_s: float, dynamic: bool) -> dict:
    """Every batch size the batcher can form runs once (engines that compile per shape do it now, not while
    serving), then the smallest and the largest batch alternate for `warmup_s`. Returns the median call time,
    ns, of each of those two sizes: the capacity estimates that --find-max-qps and offline start from."""
    for size in range(1, max_batch + 1):
        session.run(session.prepare(rows_batch(pool, np.arange(size) % pool.size, dynamic)))
    sizes = sorted({1, max_batch})
    prepared = {s: session.prepare(rows_batch(pool, np.arange(s) % pool.size, dynamic)) for s in sizes}
    times: dict[int, list[int]] = {s: [] for s in sizes}
    deadline = time.perf_counter() + warmup_s
    while True:
        for s in sizes:
            t0 = time.perf_counter_ns()
            session.run(prepared[s])
            times[s].append(time.perf_counter_ns() - t0)
        if time.perf_counter() >= deadline and len(times[sizes[0]]) >= 3:
            break
    return {s: int(np.median(t[-20:])) for s, t in times.items()}


def _worker_main(index: int, tasks, done, load_session, pool: TokenBatch, max_batch: int, warmup_s: float,
                 fidelity_inputs, dynamic: bool) -> None:
    try:
        t0 = time.perf_counter()
        session = load_session()
        load_s = time.perf_counter() - t0
        outputs = session.run(session.prepare(fidelity_inputs)) if fidelity_inputs is not None else None
        details = dict(session.details)
        start_peak_window(details)
        service_ns = _warm_up(session, pool, max_batch, warmup_s, dynamic)
        done.send(("ready", index, {"load_s": load_s, "service_ns": service_ns, "details": details,
                                    "executed_precision": session.executed_precision, "outputs": outputs}))
        while True:
            task = tasks.recv()
            if task is _STOP:
                break
            batch_id, rows = task
            prepared = session.prepare(rows_batch(pool, rows, dynamic))
            start = time.perf_counter_ns()
            session.run(prepared)
            done.send(("done", batch_id, start, time.perf_counter_ns()))
        done.send(("bye", index, {"peak_rss_mb": peak_rss_mb()}))
    except BaseException as e:  # noqa: BLE001 - report anything; the parent decides
        try:
            done.send(("error", index, f"{type(e).__name__}: {e}", traceback.format_exc()))
        except OSError:
            pass


class WorkerPool(ProcessPool):
    """`workers` processes, each with its own session (a fresh load by the picklable `load_session`), loaded
    and warmed up once and then serving any number of LoadGen runs."""

    def __init__(self, load_session, pool: TokenBatch, workers: int, max_batch: int, warmup_s: float,
                 fidelity_inputs: TokenBatch | None = None, dynamic: bool = False):
        super().__init__(_worker_main, [(load_session, pool, max_batch, warmup_s, fidelity_inputs if i == 0 else None,
                                         dynamic) for i in range(workers)])
        self.pool = pool

    def send(self, worker: int, batch_id: int, rows: list[int]) -> None:
        self.tasks[worker].send((batch_id, rows))


# -- one LoadGen run --------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """Every query of one LoadGen run, ns on CLOCK_MONOTONIC; row k of each array is the k-th completed query."""

    arrival_ns: np.ndarray
    dispatch_ns: np.ndarray
    complete_ns: np.ndarray
    batch_size: np.ndarray  # the size of the batch the query was served in
    # one row per batch: worker, size, dispatch, the session call's start and end, completion
    batches: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), dtype=np.int64))

    @property
    def latency_ns(self) -> np.ndarray:
        """From arrival to completion: queueing, batching, transfer to the worker and the call itself."""
        return self.complete_ns - self.arrival_ns


class Dispatcher:
    """LoadGen's callbacks (`issue`, `flush`) plus the batcher and responder threads of one run."""

    def __init__(self, pool: WorkerPool, max_batch: int, max_wait_ns: int):
        self.pool, self.max_batch, self.max_wait_ns = pool, max_batch, max_wait_ns
        self.pending: queue_mod.Queue = queue_mod.Queue()  # (query id, sample index, arrival ns)
        self.free: queue_mod.Queue = queue_mod.Queue()  # idle workers
        for w in range(pool.size):
            self.free.put(w)
        self.in_flight: dict[int, tuple[int, list, int]] = {}  # batch id -> (worker, queries, dispatch ns)
        self.completed: list[tuple] = []  # per batch: (queries, dispatch, start, end, complete, worker)
        self.error: str | None = None
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._batcher, daemon=True),
                         threading.Thread(target=self._responder, daemon=True)]

    def issue(self, samples) -> None:
        now = time.perf_counter_ns()
        for s in samples:
            self.pending.put((s.id, s.index, now))

    def flush(self) -> None:
        pass

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.pending.put(_STOP)
        self.free.put(_STOP)
        for t in self._threads:
            t.join(timeout=5)

    def _batcher(self) -> None:
        batch_id = 0
        while True:
            worker = self.free.get()
            if worker is _STOP:
                return
            first = self.pending.get()
            if first is _STOP:
                return
            batch = [first]
            deadline = first[2] + self.max_wait_ns
            while len(batch) < self.max_batch:
                left = (deadline - time.perf_counter_ns()) / 1e9
                try:
                    item = self.pending.get(timeout=left) if left > 0 else self.pending.get_nowait()
                except queue_mod.Empty:
                    break
                if item is _STOP:
                    self.pending.put(_STOP)
                    break
                batch.append(item)
            batch_id += 1
            self.in_flight[batch_id] = (worker, batch, time.perf_counter_ns())
            if self.error is not None:  # a worker failed: finish the queries unserved so LoadGen can end
                self._complete(batch_id, 0, 0)
                continue
            self.pool.send(worker, batch_id, [index for _, index, _ in batch])

    def _responder(self) -> None:
        while not self._stop.is_set():
            for conn in wait_connections(self.pool.dones, timeout=_POLL_S):
                try:
                    msg = self.pool.recv(conn)
                except RuntimeError as e:
                    self._fail(str(e))
                    continue
                if msg[0] == "done":
                    self._complete(msg[1], msg[2], msg[3])
            try:
                self.pool.check_alive()
            except RuntimeError as e:
                self._fail(str(e))

    def _fail(self, error: str) -> None:
        if self.error is None:
            self.error = error
        for batch_id in list(self.in_flight):
            self._complete(batch_id, 0, 0)

    def _complete(self, batch_id: int, start: int, end: int) -> None:
        import mlperf_loadgen as lg

        entry = self.in_flight.pop(batch_id, None)
        if entry is None:  # already completed by a failure's clean-up
            return
        worker, batch, dispatched = entry
        lg.QuerySamplesComplete([lg.QuerySampleResponse(qid, 0, 0) for qid, _, _ in batch])
        self.completed.append((batch, dispatched, start, end, time.perf_counter_ns(), worker))
        self.free.put(worker)

    def trace(self) -> Trace:
        rows = [(arrival, dispatched, done, len(batch)) for batch, dispatched, _, _, done, _ in self.completed
                for _, _, arrival in batch]
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        batches = np.asarray([(w, len(b), d, s, e, c) for b, d, s, e, c, w in self.completed],
                             dtype=np.int64).reshape(-1, 6)
        return Trace(arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], batches)


@dataclass
class LoadgenRun:
    trace: Trace
    settings: dict  # what enginebench asked LoadGen for
    log: dict  # LoadGen's detail log: key -> value (its MLLOG lines, the last value of each key)
    summary: str  # LoadGen's summary log, as it wrote it


_NOISE = ("logger_", "loadgen_git", "loadgen_build", "loadgen_file", "power_", "generic_message")


def read_detail_log(path: str) -> dict:
    """LoadGen's `:::MLLOG {json}` lines as key -> value (its own bookkeeping left out)."""
    log = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith(":::MLLOG "):
                continue
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except json.JSONDecodeError:
                continue
            key = entry.get("key", "")
            if not key.startswith(_NOISE):
                log[key] = entry.get("value")
    return log


def start_test(dispatcher, samples: int, ts, outdir: str) -> tuple[str, dict]:
    """One LoadGen test with `dispatcher` as the SUT (its issue, flush, start, stop and error) and a QSL of
    `samples` resident samples; LoadGen's summary text and detail log (key -> value), written in `outdir`."""
    lg = require_loadgen()
    os.makedirs(outdir, exist_ok=True)
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = outdir
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False
    sut = lg.ConstructSUT(dispatcher.issue, dispatcher.flush)
    qsl = lg.ConstructQSL(samples, samples, lambda indices: None, lambda indices: None)  # inputs stay resident
    dispatcher.start()
    try:
        lg.StartTestWithLogSettings(sut, qsl, ts, log_settings)
    finally:
        dispatcher.stop()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if dispatcher.error:
        raise RuntimeError(dispatcher.error)
    with open(os.path.join(outdir, "mlperf_log_summary.txt"), encoding="utf-8", errors="replace") as f:
        summary = f.read()
    return summary, read_detail_log(os.path.join(outdir, "mlperf_log_detail.txt"))


def set_seeds(ts, seeds: dict) -> None:
    ts.schedule_rng_seed = seeds["schedule_rng_seed"]
    ts.qsl_rng_seed = seeds["qsl_rng_seed"]
    ts.sample_index_rng_seed = seeds["sample_index_rng_seed"]


def run_loadgen(pool: WorkerPool, *, scenario: str, max_batch: int, max_wait_ms: float, outdir: str,
                min_duration_s: float, min_queries: int, seeds: dict, qps: float | None = None,
                slo_ms: float | None = None, expected_qps: float | None = None) -> LoadgenRun:
    """One LoadGen PerformanceOnly run of `scenario` ("server" or "offline") against the pool; `seeds`:
    LoadGen's schedule, QSL and sample-index seeds (server.loadgen_seeds)."""
    lg = require_loadgen()
    settings = {"scenario": scenario, "mode": "PerformanceOnly", "min_duration_ms": int(min_duration_s * 1000),
                "min_query_count": int(min_queries), **seeds, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                "loadgen_version": loadgen_version()}
    ts = lg.TestSettings()
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = settings["min_duration_ms"]
    ts.min_query_count = settings["min_query_count"]
    set_seeds(ts, seeds)
    if scenario == "server":
        ts.scenario = lg.TestScenario.Server
        ts.server_target_qps = float(qps)
        ts.server_target_latency_ns = int(slo_ms * 1e6)
        settings.update(server_target_qps=float(qps), server_target_latency_ns=int(slo_ms * 1e6),
                        server_target_latency_percentile=0.99)
    else:
        ts.scenario = lg.TestScenario.Offline
        ts.offline_expected_qps = float(expected_qps)
        settings["offline_expected_qps"] = float(expected_qps)
    dispatcher = Dispatcher(pool, max_batch, int(max_wait_ms * 1e6))
    summary, log = start_test(dispatcher, pool.pool.size, ts, outdir)
    return LoadgenRun(dispatcher.trace(), settings, log, summary)
