"""A Plan: the cross product of the options, as cells, grouped into jobs that share one loaded model."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from enginebench.measure.timing import StoppingRule
from enginebench.models.spec import ModelSpec
from enginebench.scenarios.base import Grid, ScenarioSettings
from enginebench.scenarios.registry import scenario_class
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
    search_within: float | None = None  # --find-max-qps: the bracket's width where it stops, a share [0.05]

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("slo_ttft_ms", "slo_tpot_ms", "search_within"):  # cells keep their old shape (and keys)
            if d[key] is None:
                d.pop(key)
        return d

    def label(self) -> str:
        parts = ["find max qps" if self.find_max_qps else (f"{self.qps:g} q/s" if self.qps else "")]
        if self.max_batch > 1:
            parts.append(f"batcher {self.max_batch}/{self.max_wait_ms:g} ms")
        return " ".join(p for p in parts if p)


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
    settings: ScenarioSettings | None = None  # a scenario's own typed settings (e.g. concurrency's clients)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("serving", "settings"):  # cells without them keep their old shape (and cell keys)
            if getattr(self, key) is None:
                d.pop(key)
            elif key == "settings":
                d[key] = self.settings.to_dict()
        return d

    def label(self) -> str:
        w = f" x{self.workers}" if scenario_class(self.scenario).shows_workers else ""
        extra = f" {self.serving.label()}" if self.serving and self.serving.label() else ""
        extra += f" {self.settings.label()}" if self.settings else ""
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
    repetition: int = 0  # which of --repeat's independent processes this is (seeds each LoadGen run apart)
    # plan index -> the fidelity an earlier process of that cell measured: the child reuses it rather than
    # measuring it again (it depends on the engine, its precision and the model, not on the process)
    fidelity: dict[int, dict] = field(default_factory=dict)
    # {"n", "threads"} of the stored speed's GEMM reference: the child times it before and after each roofline
    # cell (measure/roofline.gemm_probe), so a figure says how fast the machine was while it was measured
    gemm_probe: dict | None = None
    context: dict = field(default_factory=dict)  # Plan.context, for the scenarios' measure()
    # (part, parts): this child is one of `parts` client nodes measuring each cell together (--client-nodes)
    client_part: tuple[int, int] | None = None


def make_cells(grid: Grid, scenarios: list[str], settings: dict[str, list | None] | None = None) -> list[Cell]:
    """Every scenario's cells on the grid (scenarios/: each makes its own), engine x precision outermost."""
    cells = []
    for engine, precision in itertools.product(grid.engines, grid.precisions):
        one = replace(grid, engines=[engine], precisions=[precision])
        for scenario in scenarios:
            cells += scenario_class(scenario).cells(one, (settings or {}).get(scenario))
    return cells


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
    reference_engine: str | None = "torch"  # fp32 outputs every engine is compared with (None: no reference)
    machine_speed: dict | None = None  # `enginebench machine` figures (decode roofline), when measured
    repeat: int = 1  # independent child processes that measure every cell (--repeat)
    order_seed: int = 0  # seeds the per-repetition shuffle of the cells' order
    load_timeout_s: float = 1800.0  # a model's load (conversion, compilation) in a child (--load-timeout)
    skips: list[tuple[Cell, str]] = field(default_factory=list)  # cells planned but not runnable: stored as skipped
    retries: int = 0  # further attempts, each in a fresh child, for a cell that failed (--retries)
    max_memory_mb: float | None = None  # a child (with its workers) holding more resident memory is ended (--max-memory)
    # what the command that planned the cells measured for their scenarios, beyond the cells themselves (ops: the
    # CPU's peaks and the measured ceilings; blocks: each block's ONNX file and the whole graph's): given to
    # measure() (CellRun.context) and to result_context
    context: dict = field(default_factory=dict)
    load_timeout_flag: str = "--load-timeout"  # the option that sets load_timeout_s, named when a load times out

    def indexed_cells(self) -> list[Cell]:
        """Every cell a run of this plan stores a result for, in the order results are indexed: the cells, then
        the planned skips."""
        return self.cells + [cell for cell, _ in self.skips]

    def work_record(self) -> dict:
        """What a run stores of the model and the workloads its cells measured (their content digests among
        them): the run's part of each cell's identity (store/identity.py)."""
        return {"model": self.model.to_dict(), "workloads": {k: w.spec.to_dict() for k, w in self.workloads.items()}}
