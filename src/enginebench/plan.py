"""A Plan: the cross product of the options, as cells, grouped into jobs that share one loaded model."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from enginebench.measure.timing import StoppingRule
from enginebench.models.spec import ModelSpec
from enginebench.workloads import WorkloadData


@dataclass(frozen=True)
class Serving:
    """How the serving scenarios (server, offline) drive the engine; LoadGen issues the queries.

    qps: the Poisson arrival rate (server), or the starting point of --find-max-qps; slo_p99_ms: the p99
    latency target counted from arrival (encoders); slo_ttft_ms / slo_tpot_ms: decoders' p99 targets for the
    time to first token (from arrival) and the time per output token; max_batch / max_wait_ms: the dynamic
    batcher (1 / 0: none), for decoders the sequences a worker generates at once."""

    qps: float | None = None
    slo_p99_ms: float | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    max_batch: int = 1
    max_wait_ms: float = 0.0
    find_max_qps: bool = False
    seed: int = 0  # LoadGen's schedule, QSL and sample-index seeds

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("slo_ttft_ms", "slo_tpot_ms"):  # encoders' cells keep their old shape (and cell keys)
            if d[key] is None:
                d.pop(key)
        return d

    def label(self) -> str:
        parts = ["find max qps" if self.find_max_qps else (f"{self.qps:g} q/s" if self.qps else "")]
        if self.max_batch > 1:
            parts.append(f"batcher {self.max_batch}/{self.max_wait_ms:g} ms")
        return " ".join(p for p in parts if p)


SERVING_SCENARIOS = ("server", "offline")


@dataclass(frozen=True)
class Cell:
    engine: str
    precision: str
    scenario: str
    workload: str
    batch_size: int
    workers: int
    threads: int  # per session (per worker in the throughput scenario)
    serving: Serving | None = None  # the server and offline scenarios' settings

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.serving is None:  # cells of the other scenarios keep their old shape
            d.pop("serving")
        return d

    def label(self) -> str:
        w = f" x{self.workers}" if self.scenario in ("throughput",) + SERVING_SCENARIOS else ""
        extra = f" {self.serving.label()}" if self.serving and self.serving.label() else ""
        return f"{self.engine} {self.precision} {self.scenario}{w}{extra} {self.workload} b{self.batch_size}"


@dataclass
class Job:
    """Cells measured by one child process, which loads the engine once and reuses the session."""

    engine: str
    precision: str
    threads: int
    options: dict[str, str]  # --option overrides for this engine
    model: ModelSpec
    workloads: dict[str, WorkloadData]
    rule: StoppingRule
    cells: list[tuple[int, Cell]] = field(default_factory=list)
    references: dict[str, np.ndarray] | None = None  # workload -> reference embeddings
    reference_only: bool = False  # compute reference embeddings instead of measuring


def make_cells(engines, precisions, workloads, batch_sizes, scenarios, workers_list, threads_list,
               cores: int, serving: Serving | None = None) -> list[Cell]:
    """Latency cells use --threads per session; throughput cells split the cores over the workers unless
    --threads-per-worker says otherwise (threads_list entries of None). Server and offline cells are planned
    like throughput cells and carry `serving`; their batch size is the batcher's largest batch."""
    cells = []
    for engine, precision in itertools.product(engines, precisions):
        for scenario in scenarios:
            sizes = [serving.max_batch] if scenario in SERVING_SCENARIOS and serving else batch_sizes
            for workload, batch in itertools.product(workloads, sizes):
                if scenario == "latency":
                    for threads in threads_list["latency"] or [cores]:
                        cells.append(Cell(engine, precision, "latency", workload, batch, 1, threads))
                else:
                    settings = serving if scenario in SERVING_SCENARIOS else None
                    for workers in workers_list:
                        for threads in threads_list["throughput"] or [max(1, cores // workers)]:
                            cells.append(Cell(engine, precision, scenario, workload, batch, workers, threads,
                                              settings))
    return cells


def make_decoder_cells(engines, precisions, tests: list[str], batch_sizes, threads_list, cores: int) -> list[Cell]:
    """Decoder cells: engine x precision x threads x batch x test (pp128, pp512, tg128), scenario generate."""
    return [Cell(engine, precision, "generate", test, batch, 1, threads)
            for engine, precision in itertools.product(engines, precisions)
            for threads in threads_list or [cores]
            for batch in batch_sizes for test in tests]


def make_decoder_server_cells(engines, precisions, shapes: list[str], workers_list, threads_list, cores: int,
                              serving: Serving) -> list[Cell]:
    """Decoder server cells: engine x precision x workers x threads x request shape (pp128+tg32, ...); the
    batch size is the most sequences a worker generates at once (--max-batch)."""
    return [Cell(engine, precision, "server", shape, serving.max_batch, workers, threads, serving)
            for engine, precision in itertools.product(engines, precisions)
            for workers in workers_list
            for threads in threads_list or [max(1, cores // workers)]
            for shape in shapes]


def group_into_jobs(cells: list[Cell], make_job) -> list[Job]:
    """One job per (engine, precision, threads), in first-seen order; make_job(engine, precision, threads)."""
    jobs: dict[tuple, Job] = {}
    for index, cell in enumerate(cells):
        key = (cell.engine, cell.precision, cell.threads)
        if key not in jobs:
            jobs[key] = make_job(*key)
        jobs[key].cells.append((index, cell))
    return list(jobs.values())


@dataclass
class Plan:
    model: ModelSpec
    workloads: dict[str, WorkloadData]
    cells: list[Cell]
    rule: StoppingRule
    engine_options: dict[str, dict[str, str]]  # engine -> --option overrides
    timeout_s: float = 600.0  # a cell's measurement, from its start message to its result
    reference_engine: str = "torch"  # fp32 outputs every engine is compared with
    machine_speed: dict | None = None  # `enginebench machine` figures (decode roofline), when measured
    repeat: int = 1  # independent child processes that measure every cell (--repeat)
    order_seed: int = 0  # seeds the per-repetition shuffle of the cells' order
    load_timeout_s: float = 1800.0  # a model's load (conversion, compilation) in a child (--load-timeout)
    skips: list[tuple[Cell, str]] = field(default_factory=list)  # cells planned but not runnable: stored as skipped
    retries: int = 0  # further attempts, each in a fresh child, for a cell that failed (--retries)
    max_memory_mb: float | None = None  # a child (with its workers) holding more resident memory is ended (--max-memory)
