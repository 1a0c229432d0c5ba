"""The data model every output shares: a Run holds Results. One schema, written down once.

Schema history (SCHEMA_VERSION):
  1 — first version: encoder latency/throughput results with raw samples, stats, fidelity and verdict.
  2 — decoders: scenario "generate" (workload = test, pp<N> or tg<N>) with prefill_tokens_per_s,
      decode_tokens_per_s, ttft_ms, itl_ms (all None elsewhere; v1 results read back with them None).
  3 — repetitions: each cell measured in independent processes (`--repeat`); `repetitions` holds every
      process's samples apart (per worker; TTFT and steps per generation for decoders), its load time and
      peak memory; `samples` stays the pooled list. Medians' CIs come from a hierarchical bootstrap over the
      processes; a CI is null when there is one sample. v1/v2 results read back as one repetition whose
      pooled samples are its only worker's (Result.process_samples).
  4 — sweeps and faults: results.cell_key (a sweep's cell, unique in the store) and a `sweeps` table; each
      repetition record carries `measurement` (items_per_call, tokens_per_item, executed_precision, details,
      fidelity: with the stored arrays, the process's Measurement, so a resumed sweep runs only missing
      repetitions); details.attempts lists every failed attempt ({repetition, attempt, kind, error}; kind is
      error, signal, exit, timeout or memory) and a failed result's details.failure its kind. v1-v3 read back
      unchanged (no key, no measurement, no attempts). The database is opened in WAL mode.
  4 (unchanged number, an optional field) — serving: scenarios "server" and "offline" (MLPerf LoadGen) fill
      `serving` (None elsewhere; older results read back with it None): the settings (target_qps, slo_p99_ms,
      max_batch, max_wait_ms), achieved_qps, latency_ms {p50, p90, p99: {value, ci95}} from arrival (LoadGen's,
      from the scheduled arrival, when percentiles_from says so; enginebench's own in issue_latency_ms), queue
      depth, batching, LoadGen's own result, valid and reasons, and find_max_qps {max_qps, bracket, trials}
      (over repetitions also searches, every one's, and max_qps_ci95);
      `samples` holds every query's latency from arrival (server) or every batch call (offline), and
      details.loadgen LoadGen's settings, summary text and detail log (key -> value).
      Decoders' server results add to `serving`: kind "decoder", slo_ttft_ms, slo_tpot_ms, ttft_ms and tpot_ms
      {p50, p90, p99}, output_tokens_per_s and batching.mode (continuous or static); latency_ms and `samples`
      are each request's arrival-to-last-token time, and each repetition keeps ttft_ns and tpot_ns per request.
  4 (unchanged number, two optional fields) — scenarios as plug-ins (scenarios/registry.py): `settings`, a
      scenario's own typed settings, part of the cell's identity (concurrency: {"clients": N}), and
      `figures`, the figures of its own it derives from the samples (concurrency: latency_ms {p50, p90, p99:
      {value, ci95}}, achieved_qps, littles_law_clients); both None elsewhere and in older results.
  5 — measurements stored raw: an ok result whose repetitions all carry `measurement` is stored as its cell's
      identity and context (engine options, the launcher's details with attempts, engine version), its
      repetitions and their arrays, marked "kept": "measurements" and without any derived figure (latency_ms,
      throughput, verdict, serving, figures, ttft_ms, ...; median_ms and items_per_s NULL; load_s kept for
      SQL readers); reading it derives the figures with today's code (store/derive.py `rebuilt`), so a
      changed statistic applies to every such result. Failed and skipped results, and results of schemas
      1-4, are stored and read back as they are (tests/fixtures holds a database of schemas 2, 3 and 4).
  5 (unchanged number, an optional field) — `roofline`: an encoder result's share of the machine's compute
      roofline, derived on read like every figure (measure/compute_roofline.py): flops_per_item, parts
      [{what, precision, flops, ceiling_gflops, share_of_flops}], roofline_items_per_s, pct_of_roofline and its
      ci95, precision (the one holding most FLOPs), emulated (precisions whose ceiling was emulated),
      ceilings_from (the `enginebench machine` measurement's time) and unknown (why there is no figure: no
      ceilings stored, ...). None for decoders, operators and results whose launcher gave no model structure.
  5 (unchanged number, an optional key) — `roofline.beside`: the machine's speed while the cell ran, from the
      GEMM probes its processes timed before and after it (details.gemm_probe of each measurement): factor
      (their median ÷ the stored reference), drifted, and the share against the ceilings scaled by it.
  5 (unchanged number, an optional key) — `roofline.parts[].ceiling_of`: "fp32" where the part's precision is
      emulated on the CPU and the fp32 ceiling, the faster, bounds it (derived on read: older results get it too).
  5 (unchanged number, one copy of each fact) — a decoder server's tpot_ns is a repetition's array in the samples
      table, as ttft_ns (before: in its JSON and again in its measurement's details; read back either way);
      details.gemm_probe is each process's alone (in its repetition's measurement) and details.measured_between
      the span from the first process's start to the last one's end, derived on read; one name for one fact:
      int8_artifact_s (was int8_quantize_s, int8_load_s, int8_compress_s), threads_used (OpenVINO also wrote
      inference_threads), weight_bytes (llama.cpp also wrote gguf_bytes), the JAX decoder's compiled_shapes
      (was compiled, the encoder's name) and the tinygrad decoder's weight_dtypes (was weights, a name the
      torch decoder uses for text). Older results keep their keys as stored.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NotRequired, TypedDict

from enginebench.measure.compute_roofline import probe_gflops
from enginebench.store.records import EndpointServed, Machine, ResultDetails, ScenarioFigures, Served

SCHEMA_VERSION = 5
STATUSES = ("ok", "failed", "skipped")


# -- the shapes of a Result's figures: plain dicts as JSON and the store keep them, their keys written here --------
class LatencySummary(TypedDict):
    """measure/stats.py Summary.to_dict(), in ms: `median` and `ci95` over processes, the rest pooled."""

    n: int
    mean: float
    median: float
    p5: float
    p90: float
    p99: float
    stdev: float
    cv: float
    ci95: list[float] | None
    outliers: int
    processes: int


class Throughput(TypedDict):
    """Closed loop: items/s from the calls' times (measure/rates.py); served: the rate LoadGen achieved."""

    items_per_s: float
    tokens_per_s: float
    ci95: list[float] | None
    wall_items_per_s: float | None


class RateSummary(TypedDict):
    """A decoder's tokens/s (measure/rates.py rate_summary), with the decode roofline on tg tests."""

    median: float
    mean: float
    ci95: list[float] | None
    n: int
    processes: int
    roofline: NotRequired[dict]


class Fidelity(TypedDict):
    """Against the reference: min_cosine (embeddings), top1_agreement or greedy_agreement (decoders)."""

    metric: str
    value: float | None  # None: it could not be computed (error says why)
    ok: bool
    threshold: float | None
    error: NotRequired[str]
    reference: NotRequired[bool]  # the row every other is compared with
    failures: NotRequired[list[str]]
    # embeddings (measure/fidelity.py)
    mean_cosine: NotRequired[float]
    max_abs_diff: NotRequired[float]
    items: NotRequired[int]
    # decoders (measure/llm_fidelity.py): full forwards against the reference's, then the cached decode loop
    greedy_agreement: NotRequired[float | None]
    greedy_positions: NotRequired[int]
    mean_abs_logit_error: NotRequired[float]
    perplexity: NotRequired[float]
    reference_perplexity: NotRequired[float]
    perplexity_increase: NotRequired[float]
    ppl_increase_threshold: NotRequired[float]
    positions: NotRequired[int]
    reference_weights: NotRequired[str]  # how the reference held its weights (fp32, or "stored" 16-bit)
    cache_agreement: NotRequired[float | None]
    cache_positions: NotRequired[int]
    cache_threshold: NotRequired[float]
    cached_reference_agreement: NotRequired[float | None]
    cached_reference_positions: NotRequired[int]
    cached_first_divergence: NotRequired[list[int | None]]
    # a server's greedy tokens through its API (no logits)
    free_running_agreement: NotRequired[float | None]
    first_divergence: NotRequired[list[int | None]]


class Verdict(TypedDict):
    ok: bool
    reasons: list[str]  # each a sentence naming the problem and the fix


class RooflinePart(TypedDict):
    """One part of an encoder's FLOPs, in the precision it ran in (measure/compute_roofline.py)."""

    what: str  # "linear (int8)", "attention products (fp32)", ...
    precision: str
    flops: float  # per item
    ceiling_gflops: float | None  # the GEMM rate the part is bounded by: its precision's ceiling (int8: GOP/s)
    share_of_flops: float | None
    ceiling_of: NotRequired[str]  # "fp32" where the precision is emulated and fp32's ceiling is the faster one


class MachineBeside(TypedDict):
    """How fast the machine ran beside a cell: its processes' GEMM probes against the stored reference."""

    factor: float  # median probe ÷ reference_gflops
    drifted: bool  # beyond compute_roofline.DRIFT either way
    probe_gflops: list[float]  # before and after the cell, per process
    reference_gflops: float
    n: int  # the probe's square size
    pct_of_roofline: float  # the share against the ceilings scaled by factor
    ci95: list[float] | None


class Roofline(TypedDict):
    """An encoder result's share of the machine's compute roofline (measure/compute_roofline.py)."""

    flops_per_item: float | None
    parts: list[RooflinePart]
    roofline_items_per_s: float | None
    pct_of_roofline: float | None
    ci95: list[float] | None
    precision: str | None  # the one holding most FLOPs
    emulated: list[str]  # precisions whose ceiling was emulated on this CPU
    ceilings_from: str | None  # when the ceilings were measured
    ceilings_busy_cores: NotRequired[float]  # cores other processes used meanwhile, where over host_load.BUSY_CORES
    unknown: str | None  # why there is no figure
    beside: NotRequired[MachineBeside]


class Repetition(TypedDict):
    """One process that measured the cell (store/derive.py repetition_record): its raw facts."""

    index: int
    worker_samples: list[list[int]]  # ns per call, per worker
    load_s: float
    peak_rss_mb: float
    wall_s: float
    ttft_ns: NotRequired[list[int]]  # decoders: per generation (the decoder server: per request)
    tpot_ns: NotRequired[list[int]]  # the decoder server: each request's time per output token
    generation_steps: NotRequired[list[int]]
    requests: NotRequired[list[dict]]  # against an endpoint: every request's record (endpoint/client.py)
    measurement: NotRequired[dict]  # schema 4+: the rest of the process's Measurement (derive.measurement_record)


@dataclass
class Result:
    engine: str
    model: str
    precision: str
    scenario: str
    workload: str
    batch_size: int
    seq_len: int
    workers: int
    threads: int
    status: str = "ok"  # ok, failed (see error) or skipped (see error for the reason)
    error: str | None = None
    engine_version: str | None = None
    executed_precision: str | None = None
    samples: list[int] = field(default_factory=list)  # every measured call, ns
    latency_ms: LatencySummary | None = None
    throughput: Throughput | None = None
    load_s: float | None = None
    peak_rss_mb: float | None = None
    fidelity: Fidelity | None = None
    verdict: Verdict | None = None
    engine_options: dict = field(default_factory=dict)
    details: ResultDetails = field(default_factory=dict)  # context and facts beside the figures (store/records.py)
    # generate scenario (decoders): tokens/s as {median, mean, ci95}, plus roofline on decode; ms summaries
    prefill_tokens_per_s: RateSummary | None = None  # pp tests: prompt tokens / prefill call
    decode_tokens_per_s: RateSummary | None = None  # tg tests: generated tokens / decode call
    ttft_ms: LatencySummary | None = None  # tg tests: time to first token (prefill + first argmax), per generation
    itl_ms: LatencySummary | None = None  # tg tests: inter-token latency = each decode step
    repetitions: list[Repetition] = field(default_factory=list)  # one per process that measured the cell
    serving: Served | EndpointServed | None = None  # server / offline scenarios (MLPerf LoadGen, store/records.py)
    settings: dict | None = None  # a scenario's own settings, part of the cell's identity (schema history)
    figures: ScenarioFigures | None = None  # a scenario's own figures, derived from the samples (store/records.py)
    roofline: Roofline | None = None  # encoders: share of the machine's compute roofline

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if self.status == "ok":
            if not self.samples:
                raise ValueError("an ok result needs at least one sample")
            if any(s < 0 for s in self.samples):
                raise ValueError("negative duration in samples")
            if self.latency_ms is None or self.verdict is None:
                raise ValueError("an ok result needs latency statistics and a verdict")
        elif not self.error:
            raise ValueError(f"a {self.status} result needs an error saying why")
        for name in ("batch_size", "seq_len", "workers", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.load_s is not None and (self.load_s < 0 or math.isnan(self.load_s)):
            raise ValueError("load_s must be a non-negative number")

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_samples:
            d.pop("samples")
            d["repetitions"] = [{k: v for k, v in rep.items() if k not in SAMPLE_ARRAYS} for rep in self.repetitions]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Result":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def gemm_probes(self) -> list[float]:
        """numpy's GEMM GFLOP/s its processes timed before and after the cell (measure/roofline.gemm_probe), in
        the order taken; empty where none was (decoders, servers, results stored before probes)."""
        return probe_gflops([((rep.get("measurement") or {}).get("details") or {}).get("gemm_probe")
                             for rep in self.repetitions])

    def process_samples(self) -> list[list[int]]:
        """Each process's call samples (its workers' together), ns; a schema 1-2 result is one process."""
        if not self.repetitions:
            return [list(self.samples)] if self.samples else []
        return [[x for w in rep.get("worker_samples", []) for x in w] for rep in self.repetitions]


SAMPLE_ARRAYS = ("worker_samples", "ttft_ns", "tpot_ns", "generation_steps")  # a repetition's arrays (stored as blobs)


@dataclass
class Run:
    run_id: str
    created_at: str  # ISO 8601, UTC
    machine: Machine
    config: dict  # the options the run was started with
    results: list[Result] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self, with_samples: bool = True) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "machine": self.machine,
            "config": self.config,
            "results": [r.to_dict(with_samples) for r in self.results],
        }

    def to_pandas(self):
        """One row per result, flat columns (see store/frame.py): `run.to_pandas().query("status == 'ok'")`."""
        from enginebench.store.frame import to_frame

        return to_frame(self)
