"""From a checked RunConfig (config.py) to a Plan: its defaults resolved against the model and the machine,
and what only they can tell checked (a one-line UsageError naming the fix) before anything is measured."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import replace

from enginebench.config import ENDPOINT_DEFAULT_SCENARIOS, RunConfig
from enginebench.endpoint.client import GENERATION_APIS, Connection, Target, base_url
from enginebench.endpoint.probe import probe
from enginebench.engines.endpoint import SERVED
from enginebench.engines import engine_class, installed_engines, require_engine
from enginebench.engines.base import splitting_calls
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.models import resolve_model
from enginebench.models.cut import CUT_REFERENCE_ENGINE, cut_model_spec
from enginebench.models.decoder_folder import decoder_from_config_file
from enginebench.plan import Plan, Serving, make_cells, make_decoder_server_cells
from enginebench.scenarios.base import Grid
from enginebench.scenarios.registry import default_scenarios, runnable_scenarios, scenario_class
from enginebench.workloads import DEFAULT_CORPUS, WORKLOADS, build_workload
from enginebench.workloads.prompts import build_prompt_sets, decoder_tests, is_test_name, request_shapes

# `run`'s defaults for the options below; `run --quick` (every installed engine, both workloads, both
# scenarios, short cells: the whole suite in about four minutes on 2 cores) has its own.
FULL = {"duration_s": 10.0, "min_samples": 10, "warmup_s": 1.0, "batch_sizes": [1, 16, 32, 64], "repeat": 3}
QUICK = {"duration_s": 1.0, "min_samples": 5, "warmup_s": 0.3, "batch_sizes": [1], "repeat": 1}
NATIVE = "native"  # the precision of a model as it came (a GGUF file's own quant type: see engines/llamacpp.py)
DEFAULT_PROMPT_LENS = [128, 512]  # decoders: pp tests (llama-bench's pp512 and a shorter one)
DEFAULT_GEN_LENS = [128]  # decoders: tg tests


def plan_from_config(config: RunConfig):
    """The Plan of a checked configuration (raises UsageError for what the model or the machine refuse).

    The cheap checks come first: resolving the model may convert or write gigabytes."""
    defaults = QUICK if config.quick else FULL

    def given(name):
        value = getattr(config, name)
        return defaults[name] if value is None else value

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for name in config.engines or []:
        require_engine(name)
    scenarios = config.scenarios or default_scenarios("encoder")
    serving = _serving(config, scenarios)
    settings = scenario_settings(config, scenarios)
    threads = {"latency": config.threads or [], "throughput": config.threads_per_worker or []}
    rule = StoppingRule(duration_s=given("duration_s"), min_samples=given("min_samples"),
                        warmup_s=given("warmup_s"))
    common = dict(rule=rule, engine_options={e: dict(kv) for e, kv in config.engine_options.items()},
                  repeat=given("repeat"),
                  timeout_s=config.timeout_s, load_timeout_s=config.load_timeout_s,
                  order_seed=config.seed,  # --seed also seeds each repetition's shuffle of the cells' order
                  retries=config.retries, max_memory_mb=config.max_memory_mb)

    model = _resolve_run_model(config)
    _check_micro_batch(config.engine_options, model)
    if config.endpoint:
        return _endpoint_plan(config, model, cores, common, settings,
                              _with_slo(config, serving, model) if serving is not None else None)
    engines = config.engines
    if not engines:
        engines = [e for e in installed_engines() if model.kind in engine_class(e).model_kinds]
        if not engines:
            raise UsageError(f"no engine that runs {model.kind} models is installed: pip install 'enginebench[all]' (or make bench)")
    # a model that came in its own format (a GGUF file) runs as it is unless asked otherwise, as llama-bench would
    precisions = config.precisions or ([NATIVE] if model.gguf_path else ["fp32"])
    if serving is not None:
        serving = _with_slo(config, serving, model)
    if model.kind == "decoder":
        return _decoder_plan(config, model, engines, precisions, threads, cores, common, serving)
    _check_kinds(scenarios, model)
    if config.until:
        model = cut_model_spec(model, config.until)
    workloads = _encoder_workloads(config, model)
    data = {w: build_workload(w, model.path, seq_len=config.seq_len or 128, seed=config.seed,
                              corpus=config.corpus or DEFAULT_CORPUS, max_positions=model.max_positions,
                              padding=config.padding or "fixed")
            for w in workloads}
    grid = Grid(engines, precisions, workloads, given("batch_sizes"), config.workers or [cores], threads["latency"],
                threads["throughput"], cores, serving)
    cells = make_cells(grid, scenarios, settings)
    reference = CUT_REFERENCE_ENGINE if model.until else "torch"
    return Plan(model, data, cells, reference_engine=reference, **common)


def _encoder_workloads(config: RunConfig, model) -> list[str]:
    tests = [w for w in config.workloads or [] if is_test_name(w)]
    if tests:
        raise UsageError(f"--workload {tests[0]} names a decoder's test: {model.name} is an encoder, whose "
                         f"workloads are {', '.join(WORKLOADS)}")
    return config.workloads or list(WORKLOADS)


ENDPOINT_PROMPT_LEN, ENDPOINT_GEN_LEN = 128, 32  # a generation request's default shape against an endpoint


def endpoint_options(config: RunConfig, served_model: str) -> dict[str, str]:
    """The endpoint engine's options (recorded with every result): where, what, the key's variable's name, the
    goodput SLOs (--slo-p99 / --slo-ttft / --slo-tpot)."""
    s = config.serving
    slo = {"slo_p99_ms": s.slo_p99_ms, "slo_ttft_ms": s.slo_ttft_ms, "slo_tpot_ms": s.slo_tpot_ms}
    return {"url": base_url(config.endpoint), "api": config.api, "served_model": served_model,
            "api_key_env": config.api_key_env or "",
            "request_timeout": repr(float(min(config.timeout_s, 600.0))),
            **{k: repr(float(v)) for k, v in slo.items() if v is not None}}


def _endpoint_plan(config: RunConfig, model, cores: int, common: dict, settings: dict, serving=None) -> Plan:
    """A running server measured through its API (--endpoint): the model's kind must fit the API, the server
    must answer a short probe (probe.py: a one-line UsageError otherwise); one `endpoint` cell per scenario x
    workload (embeddings: texts per request, --batch-size [1]; generation: --prompt-len x --gen-len requests)."""
    generates = config.api in GENERATION_APIS
    if generates != (model.kind == "decoder"):
        want = "a decoder (LLM), e.g. --model smollm2-135m" if generates else "an encoder, e.g. --model minilm"
        raise UsageError(f"--api {config.api} needs {want} for its tokenizer and fidelity reference: {model.name} "
                         f"is {_KIND_WORDS.get(model.kind, model.kind)}")
    if config.api_key_env and config.api_key_env not in os.environ:
        raise UsageError(f"--api-key-env {config.api_key_env}: no such environment variable is set here")
    if generates and (config.workloads or config.seq_len):
        raise UsageError("--workload/--seq-len are for --api embeddings: generation takes --prompt-len and --gen-len")
    if not generates and (config.prompt_lens or config.gen_lens):
        raise UsageError("--prompt-len/--gen-len are for --api completions or chat: embeddings take --workload")
    scenarios = config.scenarios or ENDPOINT_DEFAULT_SCENARIOS
    target = Target(config.endpoint, config.api, config.served_model or "", config.api_key_env)
    served = config.served_model or _only_model(target)
    probe(Target(config.endpoint, config.api, served, config.api_key_env))
    corpus = config.corpus or DEFAULT_CORPUS
    if generates:
        shapes = request_shapes(config.prompt_lens or [ENDPOINT_PROMPT_LEN], config.gen_lens or [ENDPOINT_GEN_LEN],
                                model.max_positions)
        data = build_prompt_sets(model.path, shapes, seed=config.seed, corpus=corpus, max_positions=model.max_positions)
        batch_sizes = [1]
    else:
        workloads = _encoder_workloads(config, model)
        data = {w: build_workload(w, model.path, seq_len=config.seq_len or 128, seed=config.seed, corpus=corpus,
                                  max_positions=model.max_positions) for w in workloads}
        batch_sizes = config.batch_sizes or [1]
    grid = Grid(["endpoint"], config.precisions or [SERVED], list(data), batch_sizes, [1], [1], [1], cores, serving)
    cells = make_cells(grid, scenarios, settings)
    if config.engines and generates:  # prefill and decode in-process: the server tax of TTFT and TPOT
        tests, _ = decoder_tests(config.prompt_lens or [ENDPOINT_PROMPT_LEN], config.gen_lens or [ENDPOINT_GEN_LEN],
                                 model.max_positions)
        sets = build_prompt_sets(model.path, tests, seed=config.seed, corpus=corpus, max_positions=model.max_positions)
        data = {**data, **sets}
        beside = Grid(config.engines, [NATIVE] if model.gguf_path else ["fp32"], list(sets), [1], [1],
                      config.threads or [], [], cores)
        cells += make_cells(beside, ["generate"])
    elif config.engines:  # the same requests in-process, beside the server: the server tax (formats/tables/endpoint)
        beside = Grid(config.engines, ["fp32"], list(data), batch_sizes, [1], config.threads or [], [], cores, serving)
        cells += make_cells(beside, scenarios, settings)
    common = {**common, "engine_options": {**common["engine_options"], "endpoint": endpoint_options(config, served)}}
    return Plan(model, data, cells, reference_engine="torch", **common)


def _only_model(target: Target) -> str:
    """The one model a server lists, when --served-model is not given (the probe says what is wrong)."""
    conn = Connection(target)
    try:
        _, body = conn.get_json("/v1/models")
    except OSError:
        body = None
    finally:
        conn.close()
    ids = [m.get("id") for m in (body or {}).get("data", [])] if isinstance(body, dict) else []
    if len(ids) == 1:
        return str(ids[0])
    if len(ids) > 1:
        raise UsageError(f"{target.base} serves {len(ids)} models ({', '.join(map(str, ids))}): name one with "
                         "--served-model")
    return ""  # the probe then says what is wrong


def scenario_settings(config: RunConfig, scenarios: list[str]) -> dict[str, list]:
    """Each asked scenario's typed settings: those the configuration holds, else the scenario's defaults."""
    out = {}
    for s in scenarios:
        scenario = scenario_class(s)
        if s in config.scenario_settings:
            out[s] = [scenario.settings_from_dict(d) for d in config.scenario_settings[s]]
        elif (found := scenario.settings({})) is not None:
            out[s] = found
    return out


def _serving(config: RunConfig, scenarios: list[str]):
    """plan.Serving for the server and offline scenarios (None when neither is asked for): LoadGen must be
    importable."""
    asked = [s for s in scenarios if scenario_class(s).takes_serving]
    if not asked:
        return None
    if importlib.util.find_spec("mlperf_loadgen") is None:
        raise UsageError(f"scenario {asked[0]} needs MLPerf LoadGen: pip install 'enginebench[loadgen]'")
    s = config.serving
    return Serving(qps=s.qps, slo_p99_ms=s.slo_p99_ms, slo_ttft_ms=s.slo_ttft_ms, slo_tpot_ms=s.slo_tpot_ms,
                   max_batch=s.max_batch or 1, max_wait_ms=s.max_wait_ms or 0.0, find_max_qps=s.find_max_qps,
                   seed=config.seed,
                   search_within=None if s.search_within_pct is None else s.search_within_pct / 100)


def _with_slo(config: RunConfig, serving, model):
    """The server's latency targets, checked against the model's kind: an encoder's query is judged on its
    p99 from arrival (--slo-p99), a decoder's request on its time to first token and time per output token."""
    if "server" not in (config.scenarios or []):
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


def _resolve_run_model(config: RunConfig):
    if config.llm_config:
        return decoder_from_config_file(config.llm_config)
    return resolve_model(config.model or "minilm")


_KIND_WORDS = {"encoder": "an encoder", "decoder": "a decoder (LLM)"}


def _check_micro_batch(engine_options: dict[str, dict], model) -> None:
    """`micro_batch` splits an encoder's calls; a decoder's batch is its sequences side by side, which it does not
    split (one-line error naming the option)."""
    split = splitting_calls(engine_options)
    if split and model.kind != "encoder":
        raise UsageError(f"-o {split[0]}.micro_batch splits an encoder's calls into smaller runs: {model.name} is "
                         f"{_KIND_WORDS.get(model.kind, model.kind)}, whose batches it does not split; drop the option")


def _check_kinds(scenarios: list[str], model) -> None:
    """Every scenario asked for runs this kind of model (a one-line error naming those that do)."""
    for s in scenarios:
        kinds = scenario_class(s).model_kinds
        if model.kind not in kinds:
            them = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
            raise UsageError(f"scenario {s} needs {them}: {model.name} is {_KIND_WORDS.get(model.kind, model.kind)}"
                             f", which runs scenarios {', '.join(runnable_scenarios(model.kind))}")


def _named_tests(named: list[str], tests: list, dropped: list[str]) -> tuple[list, list[str]]:
    """The tests (and the reasons of the dropped ones) that --workload names; all of them without it."""
    if not named:
        return tests, dropped
    made = [t.name for t in tests] + [reason.split(" ", 1)[0] for reason in dropped]
    unknown = [w for w in named if w not in made]
    if unknown:
        raise UsageError(f"--workload {unknown[0]}: --prompt-len and --gen-len make the tests {', '.join(made)} "
                         f"here: name one of them, or give the length {unknown[0]} needs")
    return [t for t in tests if t.name in named], [r for r in dropped if r.split(" ", 1)[0] in named]


def _decoder_plan(config: RunConfig, model, engines, precisions, threads, cores, common, serving=None):
    """The plan for a decoder: scenario generate, one cell per engine x precision x batch x test; the tests
    that do not fit the model's positions become skipped cells with the reason. Scenario server: one cell per
    engine x precision x workers x request shape (--prompt-len x --gen-len)."""
    scenarios = config.scenarios or default_scenarios("decoder")
    _check_kinds(scenarios, model)
    if config.seq_len or config.padding:
        raise UsageError("--seq-len/--padding are for encoders: decoders take --prompt-len and --gen-len")
    named = config.workloads or []
    if any(not is_test_name(w) for w in named):
        raise UsageError(f"--workload {next(w for w in named if not is_test_name(w))} is an encoder's workload: a "
                         "decoder's --workload names its tests (e.g. pp512, tg128), made by --prompt-len and --gen-len")
    if named and "generate" not in scenarios:
        raise UsageError("--workload names the generate scenario's tests: the decoder server's requests are "
                         "--prompt-len x --gen-len")
    prompt_lens = config.prompt_lens or []
    gen_lens = config.gen_lens or DEFAULT_GEN_LENS
    if min(gen_lens) < 2:
        raise UsageError("--gen-len must be at least 2: decode steps follow the first token")
    corpus, seed = config.corpus or DEFAULT_CORPUS, config.seed
    server_sets, server_cells = {}, []
    if "server" in scenarios:
        shapes = request_shapes(prompt_lens or DEFAULT_PROMPT_LENS[:1], gen_lens, model.max_positions)
        server_sets = build_prompt_sets(model.path, shapes, seed=seed, corpus=corpus, max_positions=model.max_positions)
        workers = config.workers or [1]
        server_cells = make_decoder_server_cells(engines, precisions, list(server_sets), workers,
                                                 threads["throughput"], cores, serving)
        if scenarios == ["server"]:
            return Plan(model, server_sets, server_cells, reference_engine="torch", **common)
    tests, dropped = _named_tests(named, *decoder_tests(prompt_lens or DEFAULT_PROMPT_LENS, gen_lens,
                                                        model.max_positions))
    if not tests:
        raise UsageError(f"no test fits {model.name}'s {model.max_positions} positions: " + "; ".join(dropped))
    kept = {t.name for t in tests}
    reasons = {reason.split(" ", 1)[0]: reason for reason in dropped}  # each reason starts with its test's name
    for name, reason in reasons.items():
        if name in kept:  # a test that runs, shortened to fit
            print(f"enginebench: {reason}", file=sys.stderr)
    missing = [name for name in reasons if name not in kept]
    batch_sizes = config.batch_sizes or [1]
    sets = build_prompt_sets(model.path, tests, seed=seed, corpus=corpus, max_positions=model.max_positions)
    grid = Grid(engines, precisions, list(sets), batch_sizes, [1], threads["latency"], [], cores)
    cells = make_cells(grid, ["generate"])
    skips = [(cell, reasons[cell.workload]) for cell in make_cells(replace(grid, workloads=missing), ["generate"])]
    return Plan(model, {**sets, **server_sets}, cells + server_cells, reference_engine="torch", skips=skips,
                **common)
