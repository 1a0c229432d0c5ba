"""The shapes of a Result's serving and scenario figures: what the LoadGen scenarios (server, offline, decoder
server; scenarios/server.py, offline.py, decoder_server.py, serving.py), the endpoint scenarios
(scenarios/endpoint_server.py, requests.py) and the concurrency scenario write, key by key. They stay plain
dicts in JSON and in the store; every key a result holds is declared here, and the test suite builds every
result under ENGINEBENCH_STRICT_SHAPES=1, which refuses one that is not (store/shapes.py)."""

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


__all__ = ["Percentile", "Percentiles", "Quantiles", "Trial", "MaxQpsSearch", "QueueDepth", "Batching",
           "ServingSettings", "Served", "EndpointServed", "RequestPercentiles", "Rate",
           "ClientCeiling", "RequestFigures", "ScenarioFigures"]
