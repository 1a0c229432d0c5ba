"""From a checked RunConfig (config.py) to a Plan: its defaults resolved against the model and the machine,
and what only they can tell checked (a one-line UsageError naming the fix) before anything is measured."""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import replace

from enginebench.config import RunConfig
from enginebench.engines import engine_class, installed_engines, require_engine
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.models import resolve_model
from enginebench.models.cut import CUT_REFERENCE_ENGINE, cut_model_spec
from enginebench.models.decoder_folder import decoder_from_config_file
from enginebench.plan import Plan, Serving, make_cells, make_decoder_server_cells
from enginebench.scenarios.base import Grid
from enginebench.scenarios.registry import default_scenarios, runnable_scenarios, scenario_class
from enginebench.workloads import DEFAULT_CORPUS, WORKLOADS, build_workload
from enginebench.workloads.prompts import build_prompt_sets, decoder_tests, request_shapes

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
    workloads = config.workloads or list(WORKLOADS)
    data = {w: build_workload(w, model.path, seq_len=config.seq_len or 128, seed=config.seed,
                              corpus=config.corpus or DEFAULT_CORPUS, max_positions=model.max_positions,
                              padding=config.padding or "fixed")
            for w in workloads}
    grid = Grid(engines, precisions, workloads, given("batch_sizes"), config.workers or [cores], threads["latency"],
                threads["throughput"], cores, serving)
    cells = make_cells(grid, scenarios, settings)
    reference = CUT_REFERENCE_ENGINE if model.until else "torch"
    return Plan(model, data, cells, reference_engine=reference, **common)


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
                   seed=config.seed)


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


def _check_kinds(scenarios: list[str], model) -> None:
    """Every scenario asked for runs this kind of model (a one-line error naming those that do)."""
    for s in scenarios:
        kinds = scenario_class(s).model_kinds
        if model.kind not in kinds:
            them = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
            raise UsageError(f"scenario {s} needs {them}: {model.name} is {_KIND_WORDS.get(model.kind, model.kind)}"
                             f", which runs scenarios {', '.join(runnable_scenarios(model.kind))}")


def _decoder_plan(config: RunConfig, model, engines, precisions, threads, cores, common, serving=None):
    """The plan for a decoder: scenario generate, one cell per engine x precision x batch x test; the tests
    that do not fit the model's positions become skipped cells with the reason. Scenario server: one cell per
    engine x precision x workers x request shape (--prompt-len x --gen-len)."""
    scenarios = config.scenarios or default_scenarios("decoder")
    _check_kinds(scenarios, model)
    if config.workloads or config.seq_len or config.padding:
        raise UsageError("--workload/--seq-len/--padding are for encoders: decoders take --prompt-len and --gen-len")
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
    tests, dropped = decoder_tests(prompt_lens or DEFAULT_PROMPT_LENS, gen_lens, model.max_positions)
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
