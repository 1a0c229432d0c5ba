"""The one contract every scenario keeps, and what a scenario hands back to the orchestrator.

A scenario is a class registered by name (scenarios/registry.py), as engines are. It says:
  - its name, the model kinds it runs and whether it runs when no --scenario is given;
  - the run options it adds (`options`) and its typed settings, checked once (`settings`);
  - the cells it makes from the run's grid (`cells`);
  - how it measures one cell in the measuring process (`measure(run) -> Measurement`);
  - the Result fields it derives from a cell's measurements (`figures`);
  - how it is shown: which table a result belongs to (`table`), its label in a cell's line and in the
    tables' `settings` column, and the figure compare and recommend judge it on (`judged_on`).

This module imports nothing of the plan or of the results: both read scenarios, never the reverse.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np

from enginebench.engines import engine_class
from enginebench.measure.compute_roofline import encoder_roofline
from enginebench.measure.fidelity import compare_embeddings
from enginebench.measure.rates import closed_loop_throughput

if TYPE_CHECKING:  # types only: the plan and the results sit above the scenarios
    from enginebench.plan import Cell
    from enginebench.store.records import MeasurementDetails


@dataclass
class Measurement:
    worker_samples: list[np.ndarray]  # per worker, every measured call in ns
    items_per_call: int  # batch size
    tokens_per_item: float  # mean non-padding tokens per input
    load_s: float
    peak_rss_mb: float
    executed_precision: str
    wall_s: float  # measured wall-clock span, all workers together
    details: MeasurementDetails = field(default_factory=dict)  # what else it recorded (store/records.py)
    fidelity: dict | None = None


@dataclass(frozen=True)
class ScenarioSettings:
    """A scenario's own typed settings, carried by its cells (Cell.settings) and stored with each result
    (Result.settings): everything in them changes the work, so it is part of the cell's identity."""

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """A few words for a cell's line and the tables' settings column: `4 clients`."""
        return " ".join(f"{k} {v}" for k, v in self.to_dict().items())

    def stored(self) -> dict | None:
        """What a result stores of them (Result.settings): all of them, unless the result's own fields hold
        them already (then None)."""
        return self.to_dict()


@dataclass(frozen=True)
class Option:
    """A run option a scenario adds: `--NAME` on the command line, NAME= in eb.run() and sweep files."""

    name: str  # e.g. "concurrency" -> --concurrency
    help: str
    metavar: str | None = None
    many: bool = False  # a comma list (or the option repeated)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Grid:
    """What cells are made from: the run's checked options."""

    engines: list[str]
    precisions: list[str]
    workloads: list[str]
    batch_sizes: list[int]
    workers: list[int]  # --workers
    threads: list[int]  # --threads: per session of a single-stream scenario ([] = every core)
    threads_per_worker: list[int]  # --threads-per-worker ([] = the cores split over the workers)
    cores: int
    serving: object | None = None  # plan.Serving, for the LoadGen scenarios


@dataclass
class CellRun:
    """What a scenario's `measure` is given in the measuring process for one cell.

    `session()` is the job's shared session, loaded on first use and reused by the cells after (a load
    failure raises LoadFailed, every time it is asked again); `factory` is the picklable recipe for scenarios
    whose workers each load their own (tell the parent with `loading()` before, `loaded()` once they have);
    `fidelity(outputs)` compares a workload's outputs with the reference once per workload and job."""

    cell: "Cell"
    workload: object  # WorkloadData (encoders) or PromptSet (decoders)
    rule: object  # measure.timing.StoppingRule
    factory: Callable[[], object]
    model_kind: str
    precision: str
    references: dict | None
    session: Callable[[], object]
    loading: Callable[[], None]
    loaded: Callable[[], None]
    cache: dict  # per job: the scenario's own (fidelity by workload, the shared session's load facts)
    repetition: int = 0  # which independent process of the cell this is (Job.repetition)
    # a LoadGen run starts that expects to take this many seconds: the parent times it afresh (a search's trials)
    trial_started: Callable[[float], None] = lambda expected_s: None
    context: dict = field(default_factory=dict)  # Plan.context: what the planning command gives its scenarios
    # one of several client nodes measuring this cell together (Job.client_part): (part, parts), and the call
    # that waits for the others at the start line and gives the epoch second all start at (None: they did not)
    client_part: tuple[int, int] | None = None
    start_together: Callable[[], float | None] = lambda: None
    known_fidelity: dict | None = None  # what an earlier process of this cell measured (Job.fidelity): reused

    def reused_fidelity(self, key: str) -> bool:
        """Keep the cell's known fidelity under `key` of the job's fidelity cache (where a scenario keeps what
        it measured); whether the cache holds one for `key` now."""
        known = self.cache.setdefault("fidelity", {})
        if key not in known and self.known_fidelity is not None:
            known[key] = self.known_fidelity
        return key in known

    @property
    def remote(self) -> bool:
        """The cell measures a server over the network (Engine.remote): request clients, not sessions."""
        return engine_class(self.cell.engine).remote

    def fidelity_known(self) -> bool:
        return self.reused_fidelity(self.cell.workload)

    def fidelity_inputs(self):
        """The inputs whose outputs judge fidelity, or None when this workload's fidelity is known already."""
        return None if self.fidelity_known() else self.workload.fidelity_inputs()

    def set_fidelity(self, outputs) -> None:
        """Judge `outputs` (of fidelity_inputs()) against the reference; kept for the workload's next cells."""
        refs = self.references or {}
        found = compare_embeddings(outputs, refs[self.cell.workload], self.precision) \
            if self.cell.workload in refs and outputs is not None else None
        self.cache["fidelity"][self.cell.workload] = found

    def fidelity(self) -> dict | None:
        return self.cache.setdefault("fidelity", {}).get(self.cell.workload)


    def in_worker_processes(self, drive) -> "Measurement":
        """Measure through worker processes that each load their own session: `drive(fidelity_inputs,
        on_loaded)` returns (Measurement, the outputs of fidelity_inputs or None); fidelity is judged once per
        workload and job."""
        want = self.fidelity_inputs()
        self.loading()  # the parent hears of the load before the workers start it
        m, outputs = drive(want, self.loaded)
        if want is not None:
            self.set_fidelity(outputs)
        m.fidelity = self.fidelity()
        return m

    def shared_session(self):
        """The job's shared session and its load facts: (session, load_s, peak RSS after the load, MB)."""
        session = self.session()
        return session, self.cache["load_s"], self.cache["load_peak_rss_mb"]


def workload_args(result, corpus: str | None = None) -> list[str]:
    """An encoder result's workload as `run` options: the corpus keeps its length and its file."""
    out = ["--workload", result.workload]
    if result.workload == "corpus":
        out += ["--seq-len", str(result.seq_len)] + (["--corpus", corpus] if corpus else [])
    if ((result.details or {}).get("workload") or {}).get("padding") == "dynamic":
        out += ["--padding", "dynamic"]
    return out


def worker_args(result) -> list[str]:
    return ["--workers", str(result.workers), "--threads-per-worker", str(result.threads)]


def positions_per_item(session, batches) -> float:
    """Token positions the engine computed per input over `batches`, padding included (Session.computed_positions):
    what makes two engines' figures on one workload the same work."""
    return sum(session.computed_positions(b) for b in batches) / sum(b.size for b in batches)


def encoder_roofline_of(cell: "Cell", measurements: list[Measurement], details: dict) -> dict | None:
    """Result.roofline of an encoder cell: its closed-loop items/s (as build_result derives it, with its CI)
    against the compute roofline of the model's structure and the machine's ceilings in `details`."""
    seq_len = (details.get("workload") or {}).get("seq_len")
    if not details.get("model_structure") or not seq_len:
        return None
    m0 = measurements[0]
    items_per_s, ci = closed_loop_throughput([m.worker_samples for m in measurements], m0.items_per_call)
    # the positions the engine computed (fewer than seq_len where a batch was cut to its longest input)
    seq_len = m0.details.get("positions_per_item") or seq_len
    return encoder_roofline(items_per_s, ci, seq_len, m0.executed_precision, cell.precision, details, m0.details,
                            [m.details.get("gemm_probe") for m in measurements])


DECODER_REFERENCE = "decoder"  # key of the decoder reference in Job.references (one for every test)


class LoadFailed(RuntimeError):
    """The job's shared session did not load: every cell that needs it fails with the same words."""


class NotRunnable(Exception):
    """Raised by measure(): the cell cannot run here (its engine cannot express it), for the reason in the
    message. The cell is stored as skipped with that reason, not as failed, and never retried; `details`, what
    the measuring process learnt on the way, are merged into the result's details as a Measurement's are (their
    keys declared in store/records.py MeasurementDetails)."""

    def __init__(self, reason: str, details: dict | None = None):
        super().__init__(reason)
        self.details = details or {}


#: the tables `show` prints, in this order
TABLES = ("encoders", "decoders", "decoder serving", "endpoints", "operators", "blocks")


class Scenario(ABC):
    name: ClassVar[str]
    model_kinds: ClassVar[tuple[str, ...]] = ("encoder",)
    default: ClassVar[bool] = False  # run when no --scenario is given (for the kinds it runs)
    needs: ClassVar[str | None] = None  # an importable module it needs (LoadGen), with `install`
    install: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()  # the run options it adds (see `settings`)
    workers_load_sessions: ClassVar[bool] = False  # each worker process loads its own session
    shows_workers: ClassVar[bool] = False  # its cells' lines say `xN` workers
    judged_on: ClassVar[str] = "latency"  # what compare and recommend rank it on: latency, throughput, tokens
    judged_by_spread: ClassVar[bool] = True  # repetitions that disagree are a warning (not for a server)
    counts_as_throughput: ClassVar[bool] = False  # recommend may pick it for the throughput objective
    uses_roofline: ClassVar[bool] = False  # its results need the model's size or structure and the machine's speed
    takes_serving: ClassVar[bool] = False  # its cells carry the LoadGen settings (plan.Serving)
    #: which of them it uses (config.OPTIONS' serving options, by name): any other given alone is refused
    serving_options: ClassVar[tuple[str, ...]] = ()
    needs_arrival_rate: ClassVar[bool] = False  # refused without --qps or --find-max-qps
    per_call_latency: ClassVar[bool] = False  # its latency is one call's alone: what the latency objective ranks
    #: why recommend does not rank its results (None: it ranks them on judged_on)
    unranked_because: ClassVar[str | None] = None
    charts: ClassVar[tuple[str, ...]] = ()  # the charts its results feed (formats/charts.py CHARTS)
    #: it runs against a server (--endpoint) too, for any API: its measure() drives the endpoint's request
    #: clients (scenarios/requests.py) when CellRun.remote
    drives_endpoint: ClassVar[bool] = False
    #: its cells time what they load themselves, not a session of the plan's model: an engine's single-operator
    #: kernels (Engine.op_kernels, engines/kernels.py) on inputs they make, or the model's blocks as ONNX graphs
    #: (Plan.context's files). measure() never asks for CellRun.session, the launcher asks the engine nothing of
    #: the model (a kernel that cannot run raises NotRunnable when measured), and a result's context comes
    #: from `result_context` where it says one; their plans name no fidelity reference (Plan.reference_engine)
    times_kernels: ClassVar[bool] = False

    # -- planning -----------------------------------------------------------------------------------

    def spread_clients(self, cell: "Cell") -> int:
        """How many closed-loop clients of `cell` --client-nodes may share out over client nodes (0: none; a
        cell of one client, or of no clients, runs on one node)."""
        return 0

    def shows_roofline(self, engine: str) -> bool:
        """Whether a cell of this scenario on `engine` is set against this machine's roofline: the scenario
        derives one, and the work runs here (a server at --endpoint runs on hardware the client cannot measure,
        so its cells need no ceilings and no GEMM probe around them)."""
        return self.uses_roofline and not engine_class(engine).remote

    def settings(self, given: dict) -> list[ScenarioSettings] | None:
        """The typed settings from this scenario's options (`given`: option name -> text or list, None when
        not given), one per cell variant; None when it has no settings. Raises UsageError naming the fix."""
        return None

    @abstractmethod
    def cells(self, grid: Grid, settings: list[ScenarioSettings] | None) -> list["Cell"]:
        """The cells this scenario measures on the grid."""

    # -- measuring (in the measuring process) ---------------------------------------------------------
    @abstractmethod
    def measure(self, run: CellRun) -> Measurement:
        """Drive the session(s) under `run.rule`; raw samples only, statistics come later."""

    # -- deriving and showing ---------------------------------------------------------------------------
    def figures(self, cell: "Cell", measurements: list[Measurement], details: dict) -> dict:
        """Result fields of this scenario's own, beyond the ones every scenario gets (latency_ms from every
        sample, closed-loop throughput, the verdict): e.g. {"figures": {...}}. Derived from the raw
        measurements (and `details`: what the launcher knows of the cell, the model's parameters and the
        machine's stored speed; store/records.py ResultDetails) only, so they can be derived again from what
        is stored."""
        return {}

    def result_context(self, cell: "Cell", given: dict) -> dict | None:
        """What a result of `cell` holds besides its measurements (build_result's model, seq_len, engine_version,
        engine_options and details) when this scenario says it rather than the plan's model and engine (a kernel
        cell: its operator is its model); None: the launcher's own. `given`: Plan.context."""
        return None

    def served(self, cell: "Cell", measurements: list[Measurement], indices: list[int]) -> dict | None:
        """For a scenario judged by what it served rather than by its calls' spread: {"serving": Result.serving,
        "throughput": what replaces the closed-loop figure, "reasons": its verdict's}; None for the others.
        `indices`: each measurement's repetition."""
        return None

    def judges_spread(self, measurements: list[Measurement]) -> bool:
        """Whether the spread of these measurements' samples judges the cell (a noisy sample set, processes that
        disagree: warnings); not where latencies vary by design (a server's queueing)."""
        return self.judged_by_spread

    def table(self, result) -> str:
        """Which of TABLES a result of this scenario belongs to."""
        return "encoders"

    #: the flat columns its results add to the CSV and Parquet exports (formats/frame.py), beyond the ones every
    #: result has (store/frame.py): name -> pandas dtype, in their order; filled by `frame_values`
    frame_columns: ClassVar[dict[str, str]] = {}

    def frame_values(self, result) -> dict:
        """A stored result's values for `frame_columns` (a column left out is missing: NaN or <NA>)."""
        return {}

    def note(self, result) -> str:
        """How to read one of its rows, for the table's notes; empty when the row says it all."""
        return ""

    def reproduce_args(self, result, corpus: str | None = None) -> list[str]:
        """The `run` options that remake a result's cell beyond engine, precision, scenario and model: its
        workload (`corpus`: the --corpus file it read, if any), batch, workers and threads, its own settings."""
        return workload_args(result, corpus) + ["--batch-size", str(result.batch_size), "--threads",
                                                str(result.threads)]

    def settings_from_dict(self, d: dict) -> ScenarioSettings:
        """The typed settings back from a stored result's `settings` (or a cell's dict)."""
        raise NotImplementedError(f"scenario {self.name} has no settings")


__all__ = ["encoder_roofline_of", "workload_args", "worker_args", "Measurement", "Scenario", "ScenarioSettings", "Option", "Grid", "CellRun", "LoadFailed", "NotRunnable", "TABLES", "DECODER_REFERENCE"]
