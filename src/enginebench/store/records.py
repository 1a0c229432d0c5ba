"""The shapes of a Result's serving and scenario figures: what the LoadGen scenarios (server, offline, decoder
server; scenarios/server.py, offline.py, decoder_server.py, serving.py), the endpoint scenarios
(scenarios/endpoint_server.py, requests.py) and the concurrency scenario write, key by key; and of its
`details` (ResultDetails) and a Measurement's (MeasurementDetails): the facts the launcher, the engine's load,
the scenario and the measuring process record beside the figures. They stay plain dicts in JSON and in the
store; every key a result holds is declared here, and the test suite builds every result under
ENGINEBENCH_STRICT_SHAPES=1, which refuses one that is not (store/shapes.py); tests/store/test_details_shape.py
reads the source for every key written into details and checks each is declared."""

from __future__ import annotations

from typing import TypedDict


class Percentile(TypedDict, total=False):
    value: float  # ms
    ci95: list[float] | None
    processes: list[float]  # over processes: each process's own figure (LoadGen keeps no per-query values)


class Percentiles(TypedDict, total=False):
    p50: Percentile
    p90: Percentile
    p99: Percentile


class Quantiles(TypedDict, total=False):
    """Two quantiles without intervals (the wait for a worker)."""

    p50: float
    p99: float


class Trial(TypedDict, total=False):
    """One LoadGen run of a --find-max-qps search."""

    qps: float
    valid: bool
    p99_ms: float
    ttft_p99_ms: float
    tpot_p99_ms: float
    achieved_qps: float
    reasons: list[str]
    seeds: dict[str, int] | None
    queries: int | None


class MaxQpsSearch(TypedDict, total=False):
    """--find-max-qps: where the search stopped (a bracket, not an interval) and every trial; over repetitions,
    every search kept and the max rate with a t interval over them."""

    max_qps: float | None
    bracket: list[float | None]
    tolerance: float
    trials: list[Trial]
    stopped: str | None
    capacity_estimate_qps: float  # where the search started from: what the workers could serve back to back
    capacity_from: str  # an endpoint's: how it was estimated (closed-loop clients during the warm-up, or one)
    capacity_one_client_qps: float  # an embeddings endpoint's: one request at a time, beside the estimate
    searches: list["MaxQpsSearch"]
    max_qps_ci95: list[float]


class QueueDepth(TypedDict, total=False):
    series: list[list[float]]  # [s since the first arrival, queries in the system]
    max: int
    first_quarter_mean: float
    last_quarter_mean: float


class Batching(TypedDict, total=False):
    batches: int
    mean_size: float
    sizes: dict[str, int]  # batch size -> calls
    hold_ms_median: float
    call_ms_median: float
    mode: str  # decoders: continuous or static
    warmup_service_ms: dict[str, float]
    running_at_admission: dict[str, float]  # decoders: {mean, max} sequences running when one is admitted
    mean_decoding: float  # decoders: sequences decoding at once, on average


class ServingSettings(TypedDict, total=False):
    """The cell's serving settings (plan.Serving.to_dict)."""

    qps: float | None
    slo_p99_ms: float | None
    slo_ttft_ms: float | None
    slo_tpot_ms: float | None
    max_batch: int
    max_wait_ms: float
    find_max_qps: bool
    seed: int
    batching: str | None
    search_within: float  # only when --search-within was given


class Served(TypedDict, total=False):
    """Result.serving of an in-process LoadGen cell (server, offline, and the decoder server: kind "decoder")."""

    scenario: str  # server or offline
    kind: str  # "decoder" for the decoder server
    settings: ServingSettings | None
    target_qps: float
    slo_p99_ms: float | None
    slo_ttft_ms: float | None
    slo_tpot_ms: float | None
    queries: int
    samples: int
    gen_len: int
    achieved_qps: float
    achieved_qps_ci95: list[float] | None
    scheduled_qps: float
    samples_per_s: float  # offline: samples LoadGen completed over its own clock
    expected_qps: float  # offline: the rate LoadGen was told to expect
    output_tokens_per_s: float
    latency_ms: Percentiles
    ttft_ms: Percentiles
    tpot_ms: Percentiles
    issue_latency_ms: Percentiles  # enginebench's own stamp, from the issue callback, beside LoadGen's
    issue_ttft_ms: Percentiles
    issue_tpot_ms: Percentiles
    percentiles_from: str
    wait_ms: Quantiles
    queue: QueueDepth
    batching: Batching
    loadgen: dict  # LoadGen's own conclusions from its detail log (server.loadgen_result), key -> value
    seeds: dict[str, int]
    valid: bool
    reasons: list[str]
    more_queries: int | None
    hopeless: bool | str | None
    headline: dict[str, float]
    find_max_qps: MaxQpsSearch
    repetitions: list["Served"]  # over processes: each process's own figures


class EndpointServed(TypedDict, total=False):
    """Result.serving of an endpoint's server or offline cell (LoadGen's arrivals sent as requests)."""

    kind: str  # "endpoint"
    achieved_qps: float
    offered_qps: float | None
    loadgen: list[dict]  # each repetition's LoadGen conclusions
    all_at_once: bool  # offline
    clients: int
    find_max_qps: MaxQpsSearch


class RequestPercentiles(TypedDict, total=False):
    """A per-request figure against an endpoint: percentiles pooled over the requests, and the median's
    summary over the repetitions (store.model.LatencySummary)."""

    p50: Percentile
    p90: Percentile
    p99: Percentile
    median: dict


class Rate(TypedDict, total=False):
    value: float | None
    ci95: list[float] | None
    repetitions: int


class ClientCeiling(TypedDict, total=False):
    requests_per_s: float
    clients: int
    share: float | None
    against: str


class RequestFigures(TypedDict, total=False):
    """Figures of an endpoint cell from its requests' records (scenarios/requests.py request_figures)."""

    requests: int
    ok: int
    failures: dict[str, int]  # by kind: refused, timeout, http, malformed
    http_statuses: dict[str, int]
    e2e_ms: RequestPercentiles
    ttft_ms: RequestPercentiles
    tpot_ms: RequestPercentiles
    itl_ms: RequestPercentiles
    requests_per_s: Rate
    output_tokens_per_s: Rate
    input_tokens_per_s: Rate
    unmeasured: dict[str, int]  # warm-up and tail requests, by failure kind
    tokens_vs_usage: dict[str, dict]
    client_ceiling: ClientCeiling
    finish_reasons: dict[str, int]
    slo: dict[str, float]
    goodput_per_s: Rate
    slo_share: float | None


class ScenarioFigures(TypedDict, total=False):
    """Result.figures: a closed-loop concurrency cell's (scenarios/concurrency.py), and an endpoint cell's
    request figures (`requests`)."""

    clients: int
    latency_ms: Percentiles
    achieved_qps: float
    littles_law_clients: float
    requests: RequestFigures


# -- details: the facts recorded beside the figures ---------------------------------------------------------------
class GemmProbe(TypedDict, total=False):
    """numpy's float32 GEMM timed just before and just after a cell by its measuring process (execution/child.py;
    measure/roofline.gemm_probe), where the machine's ceilings are stored: how fast the machine ran beside it."""

    before: float  # GFLOP/s
    after: float
    taken_at: list[float]  # epoch s of each
    n: int  # the square size (from the stored `enginebench machine` row's probe reference)
    threads: int | None


class ProbeReference(TypedDict, total=False):
    """What a cell's GEMM probe is compared with (measure/peak.probe_reference)."""

    gflops: float
    n: int
    threads: int | None


class MachineSpeed(TypedDict, total=False):
    """A run's copy of the stored `enginebench machine` row (measure/peak.run_speed): the rooflines' ceilings."""

    bandwidth_gbs: float
    gemm_gflops: float
    measured_at: str
    others_cores: float  # cores other processes used while it was measured (measure/host_load.py)
    gemm_unknown: str  # why the ceilings per precision are left out (measured under other CPU features)
    gemm_gflops_by_precision: dict[str, float]
    gemm_emulated: dict[str, str]  # precision -> why its kernel counts as emulated
    gemm_probe: ProbeReference


class WorkloadRecord(TypedDict, total=False):
    """The cell's workload (workloads.WorkloadSpec.to_dict); a cell that could not run: its name alone."""

    name: str
    seed: int
    seq_len: int
    source: str
    digest: str | None
    padding: str


class StoppingRuleRecord(TypedDict, total=False):
    """measure/timing.StoppingRule.to_dict()."""

    duration_s: float
    min_samples: int
    warmup_s: float
    min_warmup: int


class Attempt(TypedDict, total=False):
    """A failed attempt at a cell (execution/local.py; faults.Failure.to_dict)."""

    repetition: int
    attempt: int
    kind: str  # execution/faults.KINDS: error, signal, exit, timeout, memory, node
    error: str


class RayNode(TypedDict, total=False):
    """The Ray node that measured a process (execution/ray.py); client nodes of a spread cell: hostnames joined."""

    hostname: str | None
    ray_node_id: str | None


class Machine(TypedDict, total=False):
    """The machine a run measured on (measure/machine.py machine_info; Run.machine)."""

    hostname: str
    cpu: str
    cpu_flags: list[str]
    cpu_features: dict  # where ENGINEBENCH_CPU_FEATURES narrowed them (measure/cpu_features.py)
    logical_cores: int
    physical_cores: int | None
    affinity: list[int] | None
    memory_gb: float | None
    governor: str | None
    os: str
    python: str
    libraries: dict[str, str]
    env: dict[str, str]


class NodeMachine(Machine, total=False):
    """A Ray result's node: the machine of the node that measured it, with its Ray id. A measurement's node
    (MeasurementDetails.node, a RayNode) holds the hostname and the id alone, and a result built from it keeps
    those."""

    ray_node_id: str | None


class ClientPart(TypedDict, total=False):
    """An endpoint cell's part measured by one of --client-nodes K nodes, before the parts merge."""

    part: int
    parts: int
    epoch_offset_ns: int  # the node's clock onto epoch ns


class ClientNode(TypedDict, total=False):
    """One client node of a spread endpoint cell (scenarios/requests.py merge_client_parts)."""

    hostname: str | None
    ray_node_id: str | None
    clients: int
    window_s: float
    requests: int  # measured requests it sent


class MeasuredCeiling(TypedDict, total=False):
    """The client's own ceiling: its clients against a minimal local server (scenarios/requests.client_ceiling)."""

    requests_per_s: float
    output_chunks_per_s: float  # generation
    clients: int
    window_s: float
    failed: int


class EndpointTarget(TypedDict, total=False):
    """The server an endpoint cell measured (engines/endpoint.py)."""

    url: str
    api: str
    path: str
    served_model: str | None
    slo: dict[str, float]  # slo_p99_ms, slo_ttft_ms, slo_tpot_ms as given
    tokenizer: str


class LoadgenRecord(TypedDict, total=False):
    """LoadGen's own record of a serving run (scenarios/loadgen_sut.LoadgenRun; endpoint_server.Trial)."""

    settings: dict  # what enginebench asked LoadGen for
    summary: str  # its summary log, as it wrote it
    log: dict  # its detail log: key -> value
    result: dict  # an endpoint's: LoadGen's conclusions (in-process servers keep them in Result.serving.loadgen)


class ExtraBuffers(TypedDict, total=False):
    used: bool
    why: str


class EngineDetails(TypedDict, total=False):
    """What an engine's session records at load (engines/: Session.details, DecoderSession.details): every
    Measurement of the session starts from it. Each key is written by the engines named."""

    # how the engine ran, read back from it (store/labels.py shows threads_used)
    executed_precision_source: str  # every engine: where Result.executed_precision was read from
    threads_used: int | None  # the intra-op threads it really used; None: the thread option has no effect
    threads_source: str  # where threads_used was read (or that it is the request, not reported back)
    threads_note: str  # onnxruntime (0: one per physical core), tinygrad (ignores the option)
    threads_spin: bool  # onnxruntime: whether its threads spin while they wait for work (off: OMP_WAIT_POLICY=PASSIVE)
    interop_threads_used: int  # torch engines: torch.get_num_interop_threads()
    inter_threads_used: int  # ctranslate2 encoder: the Encoder's num_encoders
    threads_cpu_s: list[float]  # tinygrad decoder: CPU s of each busy OS thread over the probe's decode steps
    threads_probe_wall_s: float  # tinygrad decoder: that probe's wall time
    quantization: dict  # int8 sessions: what really runs quantized (measure/quantization.py's docstring)
    int8_gemm: dict  # the int8 GEMM path that ran: ctranslate2, onnxruntime and openvino int8-static, torch.compile
    int8_matmuls: int  # onnxruntime: weight MatMuls that are integer ops in the graph
    weight_bytes: int  # decoders: weight bytes read per token (onnxruntime, tinygrad: the MatMuls'; llamacpp: the GGUF)
    attention: str  # torch engines: the attention implementation
    device: str  # jax, tinygrad, sentence-transformers
    compute_dtype: str  # jax, tinygrad
    weights: str  # torch decoder: how the weights are held
    weight_dtypes: dict[str, str]  # tinygrad decoder: layer -> dtype of its weight Tensor (the first four, the last)
    kv_cache: str  # decoders (onnxruntime, jax, tinygrad): how the KV cache is kept
    # its artifacts: the files it loads, built once and cached (models/, engines/)
    onnx_path: str  # onnxruntime, openvino: the ONNX file (export, int8, int8-static or cut: the last made)
    onnx_cached: bool  # the export was found in the cache (models/onnx_export.py, onnx_decoder_export.py)
    onnx_export_s: float
    exporter: str
    cut_at: str  # a partial model (--until; models/onnx_graph.cut_model): the node asked for
    cut_output: str  # the tensor the graph was cut at
    cut_cached: bool
    int8_cached: bool  # int8 artifacts (models/onnx_quantize.py, onnx_static_quantize.py, torch_static_quantize.py,
    # engines/openvino.py): found in the cache
    int8_artifact_s: float  # the seconds getting it took: quantized, calibrated or compressed, or read from the cache
    quantizer: str  # the tool and its version
    int8_settings: dict
    int8_scheme: str  # torch eager int8, openvino int8
    calibration: dict  # int8-static: the calibration set (workloads/calibration.py record) and method
    int8_cost: dict  # int8-static: seconds spent when the artifact was built
    pt2_path: str  # torch.compile int8-static: the converted program
    int8_program_load_s: float
    ir_path: str  # openvino int8, int8-static: the IR file
    ct2_path: str  # ctranslate2: the converted model's folder (models/ctranslate2_convert.py)
    ct2_cached: bool
    ct2_convert_s: float
    converter: str
    gguf_path: str  # llamacpp: the GGUF file
    gguf_cached: bool
    gguf_build_s: float
    weights_load_s: float  # jax, tinygrad decoders
    # onnxruntime
    providers: list[str]
    # openvino: its compiled model's properties, read back
    dynamic_quantization: dict  # int8: whether activations are quantized too, from the outputs' comparison
    inference_precision: str
    performance_hint: str
    num_streams: int
    num_streams_requested: int | str
    cpu_pinning: bool
    cpu_pinning_requested: str
    optimal_requests: int
    shapes: str  # openvino: dynamic, or static (compiled per input shape)
    # torch
    int8_linear_layers: int  # eager int8: Linear layers quantized
    int8_quantized_engine: str
    int8_layers_matching: str
    compile: str  # torch.compile: its call
    load_compile_s: float  # torch.compile: the warm-up shape's compile, at load
    compile_s_by_shape: dict[str, float]  # torch.compile: "batch x seq" -> seconds, each shape's first call
    int8_kernel_calls_by_shape: dict[str, int]  # torch.compile int8-static: int8 kernel calls profiled per shape
    cache: str  # torch decoder: its KV cache class
    # sentence-transformers
    modules: str  # how its modules were chosen
    inputs: str
    # ctranslate2
    compute_type: str
    ct2_isa: str | None
    gemm_backend: str | None
    ct2_use_mkl: str  # decoder: CT2_USE_MKL as set
    decode: str  # decoder: how a decode step is timed
    # jax, tinygrad
    backend: str  # jax
    xla_flags: str
    nproc: str | None
    threads_control: str
    compiled_shapes: list  # jax: the shapes compiled (jit) so far
    compiled: dict  # tinygrad decoder: key -> {captures, first_calls_s, calls}
    renderer: str  # tinygrad
    num_cpu_threads: int
    jit: bool
    context: int  # tinygrad decoder: positions per sequence
    padded_batches: dict[str, int]  # tinygrad decoder: "batch->rows" -> generations run padded
    cache_grown: list[list[int]]  # tinygrad decoder: [capacity, new capacity] each time the cache grew
    # llamacpp
    requested_precision: str
    n_ctx: int
    n_batch: int
    system_info: str
    extra_buffers: ExtraBuffers
    # an endpoint (engines/endpoint.py)
    endpoint: EndpointTarget
    # read back from results stored before 2026-12-06, no longer written: int8_artifact_s, threads_used and
    # weight_bytes under their old names (as the jax decoder's compiled_shapes were its `compiled`, a list, and
    # the tinygrad decoder's weight_dtypes its `weights`, a dict)
    int8_quantize_s: float
    int8_load_s: float
    int8_compress_s: float
    inference_threads: int
    gguf_bytes: int


class MeasuredDetails(TypedDict, total=False):
    """What a scenario's measure() and the measuring process add to the session's details; the result keeps
    them (store/derive.py build_result merges the first process's)."""

    notes: list[str]  # sentences the tables print (engines, scenarios, build_result, the Ray launcher)
    fidelity_reused: bool  # the process reused the fidelity an earlier process of the cell measured (child.py)
    measured_between: list[float]  # epoch s [start, end] of the cell in its process, loading included (child.py);
    # the result's: from its first process's start to its last one's end (results before 2026-12-06: the first's)
    gemm_probe: GemmProbe  # encoders where ceilings are stored (child.py): each process's, in its repetition only
    positions_per_item: float  # latency, throughput: token positions computed per input, padding included
    peak_rss_reset: bool  # False: the peak RSS includes the model's load (measure/memory.py)
    load_peak_rss_mb: float  # latency, generate: the peak RSS after loading
    worker_load_s: list[float]  # multi-worker scenarios (throughput, concurrency, server, decoder server)
    worker_peak_rss_mb: list[float]  # throughput
    barrier_spread_ms: float  # throughput: how far apart the workers left the start barrier
    queries: int  # concurrency: the queries its clients sent
    # the generate scenario (and the decoder server's test)
    test: str  # pp<N>, tg<N>
    prompt_len: int
    gen_len: int
    timing: str  # what the clock times: prefill()/decode() calls or stream() yields
    timed_call: str  # what one timed call holds (also sentence-transformers' session: its call)
    generations: int  # tg tests: generations timed
    prefills: int  # pp tests: prefills timed
    pp_timed_as: str  # pp tests: "prefill", or "ttft" where the engine owns its generation loop
    host_side: dict  # the session's host-side work timed alone, as a share of the timed call
    # serving
    loadgen: LoadgenRecord  # server, offline, decoder server, endpoint server and offline
    # against an endpoint (scenarios/requests.py, endpoint_server.py)
    clients: int
    window: list[int]  # [start, stop] ns of the measured window
    window_ns: int
    offered_qps: float | None  # endpoint server: the target rate (None offline)
    scheduled_qps: float  # endpoint server: the rate LoadGen scheduled
    achieved_qps: float
    expected_qps: float  # endpoint offline: the rate LoadGen was told to expect
    offline: bool  # endpoint offline
    client_ceiling: MeasuredCeiling
    client_nodes: list[ClientNode]  # --client-nodes: each node's part of a spread cell
    # operators (scenarios/ops): the case's work, rates and bound (ops/figures.py op_figures)
    op: dict


class MeasurementDetails(EngineDetails, MeasuredDetails, total=False):
    """scenarios/base.py Measurement.details: the session's details, what its scenario measured beside the
    samples, and what the measuring process adds (execution/child.py, execution/ray.py). Kept whole in each
    repetition's measurement record (store/derive.py measurement_record; ttft_ns, generation_steps and requests
    as the record's arrays)."""

    # one process's own: in its repetition record, not the result's details (derive._PER_PROCESS_DETAILS)
    ttft_ns: list[int]  # generate (per generation), decoder server (per request)
    tpot_ns: list[int]  # decoder server: each request's time per output token
    generation_steps: list[int]  # generate: decode samples per generation
    requests: list[dict]  # against an endpoint: every request's record (endpoint/client.py)
    # a serving process's figures: Result.serving, not details (derive._SERVING_DETAILS)
    serving: Served
    find_max_qps: MaxQpsSearch
    client_part: ClientPart  # --client-nodes: this node's part, until the parts merge (requests.py)
    node: RayNode  # the Ray node that measured it (execution/ray.py)


class ResultDetails(EngineDetails, MeasuredDetails, total=False):
    """store/model.py Result.details: the launcher's context of the cell, the first process's details (less
    per-process arrays and serving figures) and what build_result and the launcher derive."""

    # the cell's context, from the launcher (execution/local.py _result_context; an operator cell's:
    # scenarios/ops/scenario.py result_context, which gives `op` alone)
    workload: WorkloadRecord
    stopping_rule: StoppingRuleRecord
    reference_error: str | None  # why the fidelity reference could not be computed
    serving_settings: ServingSettings  # serving cells: the settings (a failed cell's identity needs them)
    # the roofline's inputs, where the scenario shows one (local.py _roofline_context)
    model_structure: dict | None  # encoders: layers, hidden_size, heads, intermediate_size (compute_roofline.py)
    model_params: int | None  # decoders
    model_size_bytes: int | None  # decoders
    machine_speed: MachineSpeed | None  # the stored `enginebench machine` row's ceilings, None where none is
    # derived by store/derive.py build_result
    wall_s: float  # the processes' measured spans, summed
    processes: int
    # faults and Ray (execution/local.py, ray.py)
    attempts: list[Attempt]  # every failed attempt
    failure: str  # a failed result: its last attempt's kind
    set_apart: list[dict]  # Ray: repetition records measured on another node after one was lost, not pooled
    node: NodeMachine  # Ray: the machine of the node that measured the cell (else its first process's RayNode)
    # read back, no longer written here
    ttft_ns: list[int]  # schema 2 results kept the first process's TTFTs in details (now: repetitions)


__all__ = ["Percentile", "Percentiles", "Quantiles", "Trial", "MaxQpsSearch", "QueueDepth", "Batching",
           "ServingSettings", "Served", "EndpointServed", "RequestPercentiles", "Rate",
           "ClientCeiling", "RequestFigures", "ScenarioFigures", "GemmProbe", "ProbeReference", "MachineSpeed",
           "WorkloadRecord", "StoppingRuleRecord", "Attempt", "RayNode", "Machine", "NodeMachine", "ClientPart",
           "ClientNode", "MeasuredCeiling",
           "EndpointTarget", "LoadgenRecord", "ExtraBuffers", "EngineDetails", "MeasuredDetails",
           "MeasurementDetails", "ResultDetails"]
