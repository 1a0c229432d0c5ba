"""From options to a Plan: every option checked (a one-line UsageError naming the fix) before anything is
measured. The command line and the Python API both come here with the same options."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field, replace

from enginebench.validate import check_engine_options, comma_list, engine_options, positive_int, seconds
from enginebench.errors import UsageError
from enginebench.models.cut import CUT_REFERENCE_ENGINE, cut_model_spec
from enginebench.scenarios.base import Grid
from enginebench.scenarios.registry import default_scenarios, runnable_scenarios, scenario_class, scenario_options

# `run`'s defaults for the options below, as they would be typed; `run --quick` (every installed engine, both
# workloads, both scenarios, short cells: the whole suite in about four minutes on 2 cores) has its own.
FULL = {"duration": "10s", "min_samples": "10", "warmup": "1s", "batch_size": ["1,16,32,64"], "repeat": "3"}
QUICK = {"duration": "1s", "min_samples": "5", "warmup": "0.3s", "batch_size": ["1"], "repeat": "1"}
NATIVE = "native"  # the precision of a model as it came (a GGUF file's own quant type: see engines/llamacpp.py)
DEFAULT_PROMPT_LENS = [128, 512]  # decoders: pp tests (llama-bench's pp512 and a shorter one)
DEFAULT_GEN_LENS = [128]  # decoders: tg tests


@dataclass
class RunOptions:
    """The options of `enginebench run`, named as its arguments' destinations; None = the default."""
    model: str | None = None
    engine: list | None = None
    precision: list | None = None
    workload: list | None = None
    scenario: list | None = None
    batch_size: list | None = None
    workers: list | None = None
    threads: list | None = None
    threads_per_worker: list | None = None
    seq_len: str | None = None
    prompt_len: list | None = None
    gen_len: list | None = None
    llm_config: str | None = None
    corpus: str | None = None
    seed: str = "0"
    quick: bool = False
    duration: str | None = None
    min_samples: str | None = None
    warmup: str | None = None
    repeat: str | None = None
    timeout: str = "10m"
    load_timeout: str = "30m"
    option: list = field(default_factory=list)  # ENGINE.KEY=VALUE items, or {engine: {key: value}}
    cpus: str | None = None
    until: str | None = None
    max_memory: str | None = None  # resident memory a child (with its workers) may hold: 500MB, 4GB
    retries: str = "0"  # further attempts for a cell that failed, each in a fresh child
    # the server and offline scenarios (MLPerf LoadGen): see cli/serving_args.py
    qps: str | None = None  # Poisson arrival rate, queries/s
    slo_p99: str | None = None  # p99 latency target from arrival: 50 (ms), 50ms, 0.05s
    slo_ttft: str | None = None  # decoders: p99 target of the time to first token, from arrival
    slo_tpot: str | None = None  # decoders: p99 target of the time per output token
    max_batch: str | None = None  # the dynamic batcher's largest batch (offline: queries per call)
    max_wait: str | None = None  # how long the batcher may hold a query to fill a batch (ms)
    find_max_qps: bool = False  # search the highest VALID rate instead of running one
    # the options scenarios add (scenarios/: Scenario.options), by name: {"concurrency": ["1,2,4"]}
    scenario_options: dict = field(default_factory=dict)


def _options(raw) -> dict[str, dict[str, str]]:
    if isinstance(raw, dict):
        check_engine_options(raw)
        return {engine: {k: str(v) for k, v in opts.items()} for engine, opts in raw.items()}
    return engine_options(raw)


def plan_from_options(args: RunOptions):
    """Validate every option and build the Plan (raises UsageError on bad input); returns (plan, quick).
    `args` holds the options as the command line gives them (strings or lists of strings).

    The cheap checks come first: resolving the model may convert or write gigabytes."""
    from enginebench.engines import engine_class, installed_engines, require_engine
    from enginebench.measure.timing import StoppingRule
    from enginebench.plan import Plan, make_cells
    from enginebench.workloads import DEFAULT_CORPUS, WORKLOADS, build_workload

    defaults = QUICK if args.quick else FULL

    def given(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    engines = comma_list(args.engine)
    for name in engines or []:
        require_engine(name)
    precisions = comma_list(args.precision)
    known = _known_precisions()
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r}: use one of {', '.join(known)}")
    workloads = comma_list(args.workload) or list(WORKLOADS)
    for w in workloads:
        if w not in WORKLOADS:
            raise UsageError(f"unknown workload {w!r}: use one of {', '.join(WORKLOADS)}")
    scenarios = comma_list(args.scenario) or default_scenarios("encoder")
    every = runnable_scenarios()
    for s in scenarios:
        if s not in every:
            raise UsageError(f"unknown scenario {s!r}: use one of {', '.join(every)}")
    serving = serving_options(args, scenarios, seed=int(args.seed) if str(args.seed).isdigit() else 0)
    settings = scenario_settings(args.scenario_options or {}, scenarios)
    batch_sizes = [positive_int("--batch-size", b) for b in comma_list(given("batch_size"))]
    workers = [positive_int("--workers", w) for w in comma_list(args.workers) or []] or [cores]
    threads = {
        "latency": [positive_int("--threads", t) for t in comma_list(args.threads) or []],
        "throughput": [positive_int("--threads-per-worker", t) for t in comma_list(args.threads_per_worker) or []],
    }
    seq_len = positive_int("--seq-len", args.seq_len) if args.seq_len is not None else 128
    seed = int(args.seed) if str(args.seed).isdigit() else -1
    if seed < 0:
        raise UsageError(f"--seed {args.seed!r} must be a whole number >= 0")
    rule = StoppingRule(duration_s=seconds("--duration", given("duration")),
                        min_samples=positive_int("--min-samples", given("min_samples")),
                        warmup_s=seconds("--warmup", given("warmup"), allow_zero=True))
    common = dict(rule=rule, engine_options=_options(args.option),
                  repeat=positive_int("--repeat", given("repeat")), timeout_s=seconds("--timeout", args.timeout),
                  load_timeout_s=seconds("--load-timeout", args.load_timeout),
                  order_seed=seed,  # --seed also seeds each repetition's shuffle of the cells' order
                  retries=_retries(args.retries),
                  max_memory_mb=megabytes("--max-memory", args.max_memory) if args.max_memory is not None else None)

    model = _resolve_run_model(args)
    if not engines:
        engines = [e for e in installed_engines() if model.kind in engine_class(e).model_kinds]
        if not engines:
            raise UsageError(f"no engine that runs {model.kind} models is installed: pip install 'enginebench[all]' (or make bench)")
    # a model that came in its own format (a GGUF file) runs as it is unless asked otherwise, as llama-bench would
    precisions = precisions or ([NATIVE] if model.gguf_path else ["fp32"])
    if serving is not None:
        serving = _with_slo(args, serving, model)
    if model.kind == "decoder":
        return _decoder_plan(args, model, engines, precisions, threads, cores, seed, common, serving), args.quick
    _check_kinds(scenarios, model)
    if getattr(args, "until", None):
        model = cut_model_spec(model, args.until)
    data = {w: build_workload(w, model.path, seq_len=seq_len, seed=seed, corpus=args.corpus or DEFAULT_CORPUS,
                              max_positions=model.max_positions) for w in workloads}
    grid = Grid(engines, precisions, workloads, batch_sizes, workers, threads["latency"], threads["throughput"],
                cores, serving)
    cells = make_cells(grid, scenarios, settings)
    reference = CUT_REFERENCE_ENGINE if model.until else "torch"
    return Plan(model, data, cells, reference_engine=reference, **common), args.quick


def scenario_settings(given: dict, scenarios: list[str]) -> dict[str, list]:
    """Each asked scenario's typed settings from the options it adds (Scenario.options, checked by the
    scenario); an option given for a scenario not asked for is refused, naming the scenario to add."""
    known = scenario_options()
    for name, value in given.items():
        if name not in known:
            raise UsageError(f"unknown option --{name.replace('_', '-')}: see enginebench run --help")
        owner = known[name][0]
        if value is not None and owner not in scenarios:
            raise UsageError(f"--{name.replace('_', '-')} is for the {owner} scenario: add --scenario {owner}")
    out = {}
    for s in scenarios:
        scenario = scenario_class(s)
        mine = {o.name: given.get(o.name) for o in scenario.options}
        found = scenario.settings(mine)
        if found is not None:
            out[s] = found
    return out


def milliseconds(name: str, text, allow_zero: bool = False) -> float:
    """A time in ms from a bare number of ms (50) or a duration with its unit (50ms, 0.05s)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return seconds(name, text, allow_zero=allow_zero) * 1000
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise UsageError(f"{name} {text!r} must be a positive number of milliseconds: give e.g. {name} 50")
    return value


def serving_options(args: RunOptions, scenarios: list[str], seed: int):
    """The server and offline scenarios' settings (plan.Serving), or None when neither is asked for; every
    option that belongs to them is refused elsewhere, and LoadGen must be importable."""
    import importlib.util

    from enginebench.plan import Serving

    asked = [s for s in scenarios if s in runnable_scenarios() and scenario_class(s).takes_serving]
    given = {"--qps": args.qps, "--slo-p99": args.slo_p99, "--slo-ttft": args.slo_ttft, "--slo-tpot": args.slo_tpot,
             "--find-max-qps": args.find_max_qps or None, "--max-batch": args.max_batch, "--max-wait": args.max_wait}
    server_only = [k for k in ("--qps", "--slo-p99", "--slo-ttft", "--slo-tpot", "--find-max-qps")
                   if given[k] is not None]
    if not asked:
        stray = [k for k, v in given.items() if v is not None]
        if stray:
            raise UsageError(f"{stray[0]} is for the serving scenarios: add --scenario "
                             f"{'server' if stray[0] in server_only else 'server or offline'}")
        return None
    if "server" not in asked and server_only:
        raise UsageError(f"{server_only[0]} is for the server scenario: add --scenario server")
    if importlib.util.find_spec("mlperf_loadgen") is None:
        raise UsageError(f"scenario {asked[0]} needs MLPerf LoadGen: pip install 'enginebench[loadgen]'")
    max_batch = positive_int("--max-batch", args.max_batch) if args.max_batch is not None else 1
    max_wait = milliseconds("--max-wait", args.max_wait, allow_zero=True) if args.max_wait is not None else 0.0
    if max_wait and max_batch == 1:
        raise UsageError("--max-wait holds queries to fill a batch: give --max-batch too (e.g. --max-batch 8)")
    qps = None
    slo = {name: milliseconds(f"--{name.replace('_', '-')}", getattr(args, name))
           for name in ("slo_p99", "slo_ttft", "slo_tpot") if getattr(args, name) is not None}
    if "server" in asked:
        if args.qps is None and not args.find_max_qps:
            raise UsageError("scenario server needs an arrival rate: give --qps N (queries/s) or --find-max-qps")
        if args.qps is not None:
            try:
                qps = float(args.qps)
            except ValueError:
                qps = -1.0
            if not qps > 0 or qps == float("inf"):
                raise UsageError(f"--qps {args.qps!r} must be a positive number of queries/s: give e.g. --qps 100")
    return Serving(qps=qps, slo_p99_ms=slo.get("slo_p99"), slo_ttft_ms=slo.get("slo_ttft"),
                   slo_tpot_ms=slo.get("slo_tpot"), max_batch=max_batch, max_wait_ms=max_wait,
                   find_max_qps=bool(args.find_max_qps), seed=seed)


def _with_slo(args: RunOptions, serving, model):
    """The server's latency targets, checked against the model's kind: an encoder's query is judged on its
    p99 from arrival (--slo-p99), a decoder's request on its time to first token and time per output token."""
    if "server" not in (comma_list(args.scenario) or []):
        return serving
    if model.kind == "decoder":
        if serving.slo_p99_ms is not None:
            raise UsageError("a decoder's requests are judged on --slo-ttft and --slo-tpot (p99 targets of the "
                             "time to first token and per output token), not --slo-p99")
        for option, value in (("--slo-ttft", serving.slo_ttft_ms), ("--slo-tpot", serving.slo_tpot_ms)):
            if value is None:
                raise UsageError(f"scenario server for a decoder needs {option} MS: the p99 targets of the time "
                                 "to first token (from arrival) and per output token, e.g. --slo-ttft 2000 "
                                 "--slo-tpot 100")
        return serving
    stray = [o for o, v in (("--slo-ttft", serving.slo_ttft_ms), ("--slo-tpot", serving.slo_tpot_ms)) if v is not None]
    if stray:
        raise UsageError(f"{stray[0]} is for decoders (LLMs): {model.name}'s queries are judged on --slo-p99")
    if serving.slo_p99_ms is None:
        raise UsageError("scenario server needs a latency target: give --slo-p99 MS (p99 from arrival, e.g. 50)")
    return serving


def _retries(text) -> int:
    if not str(text).isdigit():
        raise UsageError(f"--retries {text!r} must be a whole number >= 0: give e.g. --retries 2")
    return int(text)


_SIZE = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*(kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)?\s*", re.IGNORECASE)
_MB = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}


def megabytes(name: str, text) -> float:
    """A memory size in MB (2**20 bytes) from `500MB`, `4G`, `1.5GiB` or a bare number of MB."""
    match = _SIZE.fullmatch(str(text))
    if not match or float(match[1]) <= 0:
        raise UsageError(f"{name} {text!r} is not a memory size: give e.g. {name} 4GB (units MB, GB; a bare "
                         "number is MB)")
    return float(match[1]) * _MB[(match[2] or "m")[0].lower()]


def _known_precisions() -> list[str]:
    """Every precision some engine offers (installed or not), in first-seen order."""
    from enginebench.engines import engine_class, known_engines

    known: list[str] = []
    for name in known_engines():
        try:
            precisions = engine_class(name).precisions
        except ImportError:  # a plugin that does not import: its precisions are unknown
            continue
        known += [p for p in precisions if p not in known]
    return known


def _resolve_run_model(args):
    from enginebench.models import resolve_model

    if getattr(args, "llm_config", None):
        if args.model:
            raise UsageError("give --model or --llm-config, not both")
        from enginebench.models.decoder_folder import decoder_from_config_file

        return decoder_from_config_file(args.llm_config)
    return resolve_model(args.model or "minilm")


_KIND_WORDS = {"encoder": "an encoder", "decoder": "a decoder (LLM)"}


def _check_kinds(scenarios: list[str], model) -> None:
    """Every scenario asked for runs this kind of model (a one-line error naming those that do)."""
    for s in scenarios:
        kinds = scenario_class(s).model_kinds
        if model.kind not in kinds:
            them = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
            raise UsageError(f"scenario {s} needs {them}: {model.name} is {_KIND_WORDS.get(model.kind, model.kind)}"
                             f", which runs scenarios {', '.join(runnable_scenarios(model.kind))}")


def _decoder_plan(args, model, engines, precisions, threads, cores, seed, common, serving=None):
    """The plan for a decoder: scenario generate, one cell per engine x precision x batch x test; the tests
    that do not fit the model's positions become skipped cells with the reason. Scenario server: one cell per
    engine x precision x workers x request shape (--prompt-len x --gen-len)."""
    from enginebench.plan import Plan, make_cells, make_decoder_server_cells
    from enginebench.workloads import DEFAULT_CORPUS
    from enginebench.workloads.prompts import build_prompt_sets, decoder_tests, request_shapes

    scenarios = comma_list(args.scenario) or default_scenarios("decoder")
    _check_kinds(scenarios, model)
    if args.workload or args.seq_len:
        raise UsageError("--workload/--seq-len are for encoders: decoders take --prompt-len and --gen-len")
    prompt_lens = [positive_int("--prompt-len", n) for n in comma_list(args.prompt_len) or []]
    gen_lens = [positive_int("--gen-len", n) for n in comma_list(args.gen_len) or []] or DEFAULT_GEN_LENS
    if min(gen_lens) < 2:
        raise UsageError("--gen-len must be at least 2: decode steps follow the first token")
    corpus = args.corpus or DEFAULT_CORPUS
    server_sets, server_cells = {}, []
    if "server" in scenarios:
        shapes = request_shapes(prompt_lens or DEFAULT_PROMPT_LENS[:1], gen_lens, model.max_positions)
        server_sets = build_prompt_sets(model.path, shapes, seed=seed, corpus=corpus, max_positions=model.max_positions)
        workers = [positive_int("--workers", w) for w in comma_list(args.workers) or []] or [1]
        server_cells = make_decoder_server_cells(engines, precisions, list(server_sets), workers,
                                                 threads["throughput"], cores, serving)
        if scenarios == ["server"]:
            return Plan(model, server_sets, server_cells, reference_engine="torch", **common)
    tests, dropped = decoder_tests(prompt_lens or DEFAULT_PROMPT_LENS, gen_lens, model.max_positions)
    if not tests:
        raise UsageError(f"no test fits {model.name}'s {model.max_positions} positions: " + "; ".join(dropped))
    kept = {t.name for t in tests}
    reasons = {reason.split(" ", 1)[0]: reason for reason in dropped}  # each reason starts with its test's name
    for name, reason in reasons.items():
        if name in kept:  # a test that runs, shortened to fit
            print(f"enginebench: {reason}", file=sys.stderr)
    missing = [name for name in reasons if name not in kept]
    batch_sizes = [positive_int("--batch-size", b) for b in comma_list(args.batch_size) or []] or [1]
    sets = build_prompt_sets(model.path, tests, seed=seed, corpus=corpus, max_positions=model.max_positions)
    grid = Grid(engines, precisions, list(sets), batch_sizes, [1], threads["latency"], [], cores)
    cells = make_cells(grid, ["generate"])
    skips = [(cell, reasons[cell.workload]) for cell in make_cells(replace(grid, workloads=missing), ["generate"])]
    return Plan(model, {**sets, **server_sets}, cells + server_cells, reference_engine="torch", skips=skips,
                **common)
