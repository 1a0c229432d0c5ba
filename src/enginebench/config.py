"""One typed run configuration: what `enginebench run`, eb.run(), a part of a sweep file and tune ask to
measure, parsed and checked once (a bad value is a one-line UsageError naming the fix), stored with the run as
JSON and read back as it was stored.

A field left None takes its default, which planning.py resolves against the model and the machine (the engines
installed, the model's kind, the CPUs): the config says what was asked, the plan what it came to. What cannot
be told without the model (a decoder's --slo-ttft, a test that does not fit its positions) is checked there.

The parsers of option values every command shares (whole numbers, durations, sizes, comma lists, engine
options) live here too."""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import asdict, dataclass, field

from enginebench.endpoint.client import base_url
from enginebench.engines import engine_class, known_engines
from enginebench.errors import UsageError
from enginebench.scenarios.registry import (default_scenarios, runnable_scenarios, scenario_class,
                                             scenario_option_values, scenario_options)
from enginebench.workloads import PADDINGS, WORKLOADS
from enginebench.workloads.prompts import is_test_name

VERSION = 1  # of the stored JSON; from_dict refuses another

# -- value parsers ------------------------------------------------------------------------------------------

DURATION_OPTIONS = {"--duration": "10s", "--warmup": "1s", "--timeout": "10m", "--load-timeout": "30m"}  # -> example


def positive_int(name: str, value) -> int:
    try:  # a float (2.5, and 2.0 alike) is not a whole number: int() would cut it silently
        number = int(value if isinstance(value, (str, int)) and not isinstance(value, bool) else str(value))
    except (TypeError, ValueError):
        raise UsageError(f"{name} {value!r} is not a whole number: give e.g. {name} 8") from None
    if number < 1:
        raise UsageError(f"{name} {number} must be at least 1")
    return number


def whole_number(name: str, value, example: str = "") -> int:
    """A whole number >= 0 (--seed, --retries)."""
    if isinstance(value, bool) or not str(value).isdigit():
        raise UsageError(f"{name} {value!r} must be a whole number >= 0" + (f": give e.g. {name} {example}"
                                                                             if example else ""))
    return int(value)


_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s|m|h)?\s*")


def seconds(name: str, text, allow_zero: bool = False) -> float:
    """A duration in seconds from `10s`, `500ms`, `2m`, `1.5h` or a bare number of seconds."""
    example = f"{name} {DURATION_OPTIONS.get(name, '10s')}"
    match = None if isinstance(text, bool) else _DURATION.fullmatch(str(text))
    value = float(match[1]) * _UNITS[match[2] or "s"] if match else math.nan
    if not math.isfinite(value):
        raise UsageError(f"{name} {text!r} is not a duration: give e.g. {example} (units ms, s, m, h; "
                         "a bare number is seconds)")
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} {text!r} must be {'zero or more' if allow_zero else 'more than zero'}: "
                         f"give e.g. {example}")
    return value


def milliseconds(name: str, text, allow_zero: bool = False) -> float:
    """A time in ms from a bare number of ms (50) or a duration with its unit (50ms, 0.05s)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return seconds(name, text, allow_zero=allow_zero) * 1000
    if value < 0 or (value == 0 and not allow_zero) or value != value:
        raise UsageError(f"{name} {text!r} must be a positive number of milliseconds: give e.g. {name} 50")
    return value


_SIZE = re.compile(r"\s*(\d+\.?\d*|\.\d+)\s*(kb|mb|gb|tb|kib|mib|gib|tib|k|m|g|t)?\s*", re.IGNORECASE)
_MB = {"k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}


def megabytes(name: str, text) -> float:
    """A memory size in MB (2**20 bytes) from `500MB`, `4G`, `1.5GiB` or a bare number of MB."""
    match = _SIZE.fullmatch(str(text))
    if not match or float(match[1]) <= 0:
        raise UsageError(f"{name} {text!r} is not a memory size: give e.g. {name} 4GB (units MB, GB; a bare "
                         "number is MB)")
    return float(match[1]) * _MB[(match[2] or "m")[0].lower()]


def comma_list(values) -> list[str] | None:
    """Comma lists and repeated options, flattened, order kept, duplicates dropped. A str is one option."""
    if values is None:
        return None
    if isinstance(values, (str, int, float)):
        values = [values]
    out: list[str] = []
    for v in values:
        for item in str(v).split(","):
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return out


def engine_options(raw: list[str]) -> dict[str, dict[str, str]]:
    """`ENGINE.KEY=VALUE` items -> {engine: {key: value}}, each checked against the engine's options."""
    options: dict[str, dict[str, str]] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        engine, dot, name = key.partition(".")
        if not (eq and dot and engine and name):
            raise UsageError(f"--option {item!r} is not ENGINE.KEY=VALUE: write e.g. -o onnxruntime.graph_optimization=basic")
        engine_class(engine)  # unknown engine -> UsageError
        options.setdefault(engine, {})[name] = value
    check_engine_options(options)
    return options


def option_text(value) -> str:
    """An engine option's value as its engine reads it: true/false as sweep files and the command line write
    them."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def check_engine_options(options: dict[str, dict]) -> None:
    for engine, overrides in options.items():
        try:
            engine_class(engine).make_options(1, {k: option_text(v) for k, v in overrides.items()})
        except (KeyError, ValueError, TypeError) as e:  # the message names the engine, the option and its values
            raise UsageError(f"bad --option: {str(e).strip(chr(39))}") from None


# -- the configuration -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServingConfig:
    """The server and offline scenarios' settings (MLPerf LoadGen); None: not given."""

    qps: float | None = None  # Poisson arrival rate, queries/s
    slo_p99_ms: float | None = None  # p99 latency target from arrival
    slo_ttft_ms: float | None = None  # decoders: p99 target of the time to first token
    slo_tpot_ms: float | None = None  # decoders: p99 target of the time per output token
    max_batch: int | None = None  # the dynamic batcher's largest batch [1: none]
    max_wait_ms: float | None = None  # how long the batcher may hold a query [0]
    find_max_qps: bool = False  # search the highest VALID rate instead of running one
    search_within_pct: float | None = None  # --find-max-qps stops when its bracket is this narrow [5]


@dataclass(frozen=True)
class RunConfig:
    """What to measure, typed and checked; None: the default (see planning.py)."""

    model: str | None = None  # registry name or a folder [minilm]
    llm_config: str | None = None  # a JSON file of Llama config fields (instead of model)
    engines: list[str] | None = None
    precisions: list[str] | None = None
    workloads: list[str] | None = None
    scenarios: list[str] | None = None
    batch_sizes: list[int] | None = None
    workers: list[int] | None = None
    threads: list[int] | None = None
    threads_per_worker: list[int] | None = None
    seq_len: int | None = None
    prompt_lens: list[int] | None = None
    gen_lens: list[int] | None = None
    corpus: str | None = None
    padding: str | None = None  # workloads.PADDINGS [fixed]
    seed: int = 0
    quick: bool = False
    duration_s: float | None = None
    min_samples: int | None = None
    warmup_s: float | None = None
    repeat: int | None = None
    timeout_s: float = 600.0
    load_timeout_s: float = 1800.0
    engine_options: dict[str, dict[str, str]] = field(default_factory=dict)
    cpus: str | None = None  # taskset syntax: 0-7 or 0,2,4
    until: str | None = None  # cut the model at this ONNX node's output
    max_memory_mb: float | None = None
    retries: int = 0
    serving: ServingConfig = field(default_factory=ServingConfig)
    # the options scenarios add (Scenario.options), as given, and each asked scenario's typed settings from them
    scenario_options: dict[str, list[str]] = field(default_factory=dict)
    scenario_settings: dict[str, list[dict]] = field(default_factory=dict)
    # a running OpenAI-compatible server measured instead of engines (engines/endpoint.py)
    endpoint: str | None = None  # its URL
    api: str | None = None  # embeddings, completions or chat
    served_model: str | None = None  # the model name sent in requests [the one the server lists]
    api_key_env: str | None = None  # the environment variable holding its key (the key is never stored)

    # -- from where it is given --------------------------------------------------------------------------
    @classmethod
    def from_cli(cls, args) -> RunConfig:
        """From `enginebench run`'s parsed arguments (an argparse namespace; other commands' keys ignored)."""
        given = {o.name: getattr(args, o.name, None) for o in OPTIONS}
        return parse(given | scenario_option_values(args))

    @classmethod
    def from_argv(cls, argv: list[str]) -> RunConfig:
        """From `enginebench run` arguments: what older runs stored (to_argv's, or the whole command line after
        `enginebench`, whose other arguments, --db, --json, --ray, are left out)."""
        given, _ = _argv_parser().parse_known_args(argv[1:] if argv[:1] == ["run"] else argv)
        return cls.from_cli(given)

    @classmethod
    def from_keywords(cls, model: str | None = None, **keywords) -> RunConfig:
        """From Python keywords (eb.run, a sweep file's keys): `run`'s option names, or their plurals (engines=),
        with typed values (batch_size=[1, 16], duration=0.5) or text as typed ("500ms", "1,16")."""
        names = {o.name for o in OPTIONS} - {"model"}
        given: dict = {"model": model}
        for key, value in keywords.items():
            name = _PLURALS.get(key, key)
            if name not in names and name not in scenario_options():
                raise UsageError(f"unknown option {key!r}: use the names of `enginebench run --help` "
                                 f"({', '.join(sorted(names | set(scenario_options())))})")
            given[name] = value
        return parse(given)

    # -- stored ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """As stored: nothing is parsed or checked again (planning checks what the machine must have)."""
        d = dict(d)
        if d.pop("version", None) != VERSION:
            raise UsageError("this run's configuration was stored by another version of enginebench: measure anew")
        try:
            return cls(**{**d, "serving": ServingConfig(**d.get("serving", {}))})
        except TypeError as e:
            raise UsageError(f"this run's configuration cannot be read ({e}): measure anew") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def to_argv(self) -> list[str]:
        """The `enginebench run` arguments that give this configuration (options left at their default are
        left out): for people, to see and reproduce a run."""
        argv: list[str] = []
        default = RunConfig()
        for o in OPTIONS:
            value = getattr(self.serving if o.serving else self, o.field)
            if value is None or value == getattr(default.serving if o.serving else default, o.field):
                continue
            argv += o.argv(value)
        for name, items in self.scenario_options.items():
            argv += ["--" + name.replace("_", "-"), ",".join(items)]
        return argv


_PLURALS = {"engines": "engine", "precisions": "precision", "workloads": "workload", "scenarios": "scenario",
            "options": "option", "batch_sizes": "batch_size", "prompt_lens": "prompt_len",
            "gen_lens": "gen_len"}  # keyword spellings a Python user reaches for -> option names


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class Option:
    """A `run` option: its name (--batch-size: batch_size), the RunConfig field it sets, how it is typed
    (list, text or bool) and how a value of that field is written back (unit: s, ms or MB)."""

    name: str
    field: str
    kind: str = "text"
    unit: str = ""
    serving: bool = False  # a field of RunConfig.serving

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def argv(self, value) -> list[str]:
        if self.kind == "bool":
            return [self.flag]
        if self.name == "option":
            return [x for engine, kv in value.items() for k, v in kv.items() for x in ("-o", f"{engine}.{k}={v}")]
        if self.kind == "list":
            return [self.flag, ",".join(map(str, value))]
        if self.unit:
            return [self.flag, _number(value) + ("" if self.unit == "ms" else self.unit)]
        return [self.flag, str(value)]


OPTIONS = (
    Option("model", "model"), Option("llm_config", "llm_config"), Option("engine", "engines", "list"),
    Option("precision", "precisions", "list"), Option("workload", "workloads", "list"),
    Option("scenario", "scenarios", "list"), Option("batch_size", "batch_sizes", "list"),
    Option("workers", "workers", "list"), Option("threads", "threads", "list"),
    Option("threads_per_worker", "threads_per_worker", "list"), Option("seq_len", "seq_len"),
    Option("prompt_len", "prompt_lens", "list"), Option("gen_len", "gen_lens", "list"), Option("corpus", "corpus"),
    Option("padding", "padding"), Option("seed", "seed"), Option("quick", "quick", "bool"), Option("duration", "duration_s", unit="s"),
    Option("min_samples", "min_samples"), Option("warmup", "warmup_s", unit="s"), Option("repeat", "repeat"),
    Option("timeout", "timeout_s", unit="s"), Option("load_timeout", "load_timeout_s", unit="s"),
    Option("option", "engine_options", "list"), Option("cpus", "cpus"), Option("until", "until"),
    Option("max_memory", "max_memory_mb", unit="MB"), Option("retries", "retries"),
    Option("qps", "qps", serving=True), Option("slo_p99", "slo_p99_ms", unit="ms", serving=True),
    Option("slo_ttft", "slo_ttft_ms", unit="ms", serving=True),
    Option("slo_tpot", "slo_tpot_ms", unit="ms", serving=True), Option("max_batch", "max_batch", serving=True),
    Option("max_wait", "max_wait_ms", unit="ms", serving=True),
    Option("find_max_qps", "find_max_qps", "bool", serving=True),
    Option("search_within", "search_within_pct", unit="%", serving=True),
    Option("endpoint", "endpoint"), Option("api", "api"), Option("served_model", "served_model"),
    Option("api_key_env", "api_key_env"),
)


class _ArgvParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see `enginebench run --help`)")


def _argv_parser() -> argparse.ArgumentParser:
    """The options of OPTIONS and the scenarios', as flags: enough to read back a stored argv."""
    parser = _ArgvParser(prog="enginebench run", add_help=False, allow_abbrev=False)
    for o in OPTIONS:
        flags = [o.flag] + (["-o"] if o.name == "option" else [])
        action = "store_true" if o.kind == "bool" else "append" if o.kind == "list" else "store"
        parser.add_argument(*flags, dest=o.name, action=action, default=None)
    for name, (_, option) in scenario_options().items():
        parser.add_argument(option.flag, dest=name, action="append" if option.many else "store", default=None)
    return parser


# -- checking ----------------------------------------------------------------------------------------------

def parse(given: dict) -> RunConfig:
    """Every value checked, in the order a person reads the options; None (or absent): not given."""
    g = {k: v for k, v in given.items() if v is not None}
    if g.get("model") and g.get("llm_config"):
        raise UsageError("give --model or --llm-config, not both")
    engines, precisions, workloads, scenarios = _names(g)
    endpoint = _endpoint(g, engines, scenarios)
    asked = scenarios or (ENDPOINT_DEFAULT_SCENARIOS if endpoint else default_scenarios("encoder"))
    serving = _serving(g, asked, endpoint=bool(endpoint))
    options, settings = _scenario_options(g, asked)
    sizes = {o: _ints(o, g.get(o)) for o in ("batch_size", "workers", "threads", "threads_per_worker")}
    seq_len = positive_int("--seq-len", g["seq_len"]) if "seq_len" in g else None
    lens = {o: _ints(o, g.get(o)) for o in ("prompt_len", "gen_len")}
    seed = whole_number("--seed", g.get("seed", 0))
    rule = {"duration_s": _duration("--duration", g.get("duration")),
            "min_samples": positive_int("--min-samples", g["min_samples"]) if "min_samples" in g else None,
            "warmup_s": _duration("--warmup", g.get("warmup"), allow_zero=True)}
    return RunConfig(
        model=_text(g.get("model")), llm_config=_text(g.get("llm_config")), engines=engines,
        precisions=precisions, workloads=workloads, scenarios=scenarios, batch_sizes=sizes["batch_size"],
        workers=sizes["workers"], threads=sizes["threads"], threads_per_worker=sizes["threads_per_worker"],
        seq_len=seq_len, prompt_lens=lens["prompt_len"], gen_lens=lens["gen_len"], corpus=_text(g.get("corpus")),
        padding=_padding(g.get("padding")), seed=seed, quick=bool(g.get("quick", False)), **rule,
        repeat=positive_int("--repeat", g["repeat"]) if "repeat" in g else None,
        timeout_s=_duration("--timeout", g.get("timeout"), default=RunConfig.timeout_s),
        load_timeout_s=_duration("--load-timeout", g.get("load_timeout"), default=RunConfig.load_timeout_s),
        engine_options=_engine_options(g.get("option")), cpus=_text(g.get("cpus")), until=_text(g.get("until")),
        max_memory_mb=megabytes("--max-memory", g["max_memory"]) if "max_memory" in g else None,
        retries=whole_number("--retries", g.get("retries", 0), "2"), serving=serving,
        scenario_options=options, scenario_settings=settings, **endpoint)


def _padding(value) -> str | None:
    if value is None:
        return None
    if str(value) not in PADDINGS:
        raise UsageError(f"unknown --padding {value!r}: use fixed (every input padded to --seq-len) or dynamic "
                         f"(each batch cut to its longest input)")
    return str(value)


def _text(value) -> str | None:
    return None if value is None else str(value)


def _ints(name: str, values) -> list[int] | None:
    flag = "--" + name.replace("_", "-")
    items = comma_list(values)
    return None if not items else [positive_int(flag, v) for v in items]


def _duration(name: str, value, allow_zero: bool = False, default: float | None = None) -> float | None:
    return default if value is None else seconds(name, value, allow_zero=allow_zero)


def _names(g: dict) -> tuple[list[str] | None, ...]:
    """Engines, precisions, workloads and scenarios: each a name this enginebench knows."""
    engines = comma_list(g.get("engine")) or None
    for name in engines or []:
        engine_class(name)  # unknown -> UsageError naming the known ones; installed or not is the plan's to say
    precisions = comma_list(g.get("precision")) or None
    known = known_precisions()
    for p in precisions or []:
        if p not in known:
            raise UsageError(f"unknown precision {p!r}: use one of {', '.join(known)}")
    workloads = comma_list(g.get("workload")) or None
    for w in workloads or []:
        if w not in WORKLOADS and not is_test_name(w):
            raise UsageError(f"unknown workload {w!r}: use one of {', '.join(WORKLOADS)} (encoders), or a "
                             "decoder's test, pp<N> or tg<N> (N: its prompt or generation length)")
    scenarios = comma_list(g.get("scenario")) or None
    every = runnable_scenarios()
    for s in scenarios or []:
        if s not in every:
            raise UsageError(f"unknown scenario {s!r}: use one of {', '.join(every)}")
    return engines, precisions, workloads, scenarios


def known_precisions() -> list[str]:
    """Every precision some engine offers (installed or not), in first-seen order."""
    known: list[str] = []
    for name in known_engines():
        try:
            precisions = engine_class(name).precisions
        except ImportError:  # a plugin that does not import: its precisions are unknown
            continue
        known += [p for p in precisions if p not in known]
    return known


def _engine_options(raw) -> dict[str, dict[str, str]]:
    """ENGINE.KEY=VALUE items, or {engine: {key: value}} (Python, sweep files), checked by each engine."""
    if not raw:
        return {}
    if isinstance(raw, dict):
        options = {engine: {k: option_text(v) for k, v in kv.items()} for engine, kv in raw.items()}
        check_engine_options(options)
        return options
    return engine_options([raw] if isinstance(raw, str) else list(raw))


def _scenario_options(g: dict, scenarios: list[str]) -> tuple[dict[str, list[str]], dict[str, list[dict]]]:
    """The options scenarios add, each checked by its scenario: (as given, {scenario: typed settings}). An
    option given for a scenario not asked for is refused, naming the scenario to add."""
    known = scenario_options()
    given = {name: comma_list(g[name]) if known[name][1].many else [str(g[name])] for name in known if name in g}
    for name in given:
        owner = known[name][0]
        if owner not in scenarios:
            raise UsageError(f"--{name.replace('_', '-')} is for the {owner} scenario: add --scenario {owner}")
    settings = {}
    for owner in dict.fromkeys(known[name][0] for name in given):
        scenario = scenario_class(owner)
        mine = {o.name: given[o.name] if o.many else given[o.name][0] for o in scenario.options if o.name in given}
        settings[owner] = [s.to_dict() for s in scenario.settings(mine)]
    return given, settings


ENDPOINT_DEFAULT_SCENARIOS = ["latency"]  # what --endpoint measures when no --scenario is given
_API_NAMES = ("embeddings", "completions", "chat")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _endpoint(g: dict, engines: list[str] | None, scenarios: list[str] | None) -> dict:
    """--endpoint URL with --api (and --served-model, --api-key-env): the RunConfig fields, {} when not given.
    The server itself is probed when the run is planned (planning.py), not here."""
    flags = {"api": "--api", "served_model": "--served-model", "api_key_env": "--api-key-env"}
    if "endpoint" not in g:
        stray = next((flag for name, flag in flags.items() if name in g), None)
        if stray:
            raise UsageError(f"{stray} is for a running server: give --endpoint URL too")
        if "endpoint" in (engines or []):
            raise UsageError("engine endpoint measures a running server: give --endpoint URL --api API instead")
        return {}
    url = str(g["endpoint"])
    base_url(url)  # an http(s) URL, or UsageError
    api = str(g.get("api", ""))
    if api not in _API_NAMES:
        raise UsageError(f"--endpoint needs --api {'|'.join(_API_NAMES)} (which API to measure)" if not api else
                         f"unknown --api {api!r}: use one of {', '.join(_API_NAMES)}")
    if engines and api == "chat":  # the chat template wraps the prompt: not the work an engine is given
        raise UsageError("--engine beside --endpoint measures the server tax with --api embeddings or completions "
                         "(chat wraps the prompt in the server's template): leave out --engine")
    if "endpoint" in (engines or []):
        raise UsageError("--engine endpoint is the server at --endpoint itself: name in-process engines only")
    key_env = _text(g.get("api_key_env"))
    if key_env is not None and not _ENV_NAME.fullmatch(key_env):
        raise UsageError(f"--api-key-env {key_env!r} is not an environment variable's name: give the NAME of the "
                         "variable that holds the key (e.g. --api-key-env OPENAI_API_KEY), never the key")
    for s in scenarios or []:
        if not scenario_class(s).drives_endpoint:
            them = [n for n in runnable_scenarios() if scenario_class(n).drives_endpoint]
            raise UsageError(f"scenario {s} does not run against an endpoint: use {', '.join(them)}")
    return {"endpoint": url, "api": api, "served_model": _text(g.get("served_model")), "api_key_env": key_env}


_GOODPUT = ("slo_p99", "slo_ttft", "slo_tpot")  # against an endpoint, the SLOs of goodput in every scenario


def _serving(g: dict, scenarios: list[str], endpoint: bool = False) -> ServingConfig:
    """The serving scenarios' settings; each is refused when no scenario asked for takes it (against an
    endpoint, the SLOs are goodput's targets in every scenario)."""
    names = [o.name for o in OPTIONS if o.serving]
    given = [n for n in names if g.get(n) not in (None, False) and not (endpoint and n in _GOODPUT)]
    asked = [s for s in scenarios if scenario_class(s).takes_serving]
    flag = {n: "--" + n.replace("_", "-") for n in names}
    if given and not asked:
        raise UsageError(f"{flag[given[0]]} is for the serving scenarios: add --scenario "
                         f"{' or '.join(_taking(given[0]))}")
    stray = [n for n in given if not any(n in scenario_class(s).serving_options for s in asked)]
    if stray:
        takers = _taking(stray[0])
        raise UsageError(f"{flag[stray[0]]} is for the {' or '.join(takers)} scenario: add --scenario {takers[0]}")
    max_batch = positive_int("--max-batch", g["max_batch"]) if "max_batch" in g else None
    max_wait = milliseconds("--max-wait", g["max_wait"], allow_zero=True) if "max_wait" in g else None
    if max_wait and (max_batch or 1) == 1:
        raise UsageError("--max-wait holds queries to fill a batch: give --max-batch too (e.g. --max-batch 8)")
    slo = {n: milliseconds(flag[n], g[n]) for n in ("slo_p99", "slo_ttft", "slo_tpot") if n in g}
    find_max_qps = bool(g.get("find_max_qps", False))
    for s in asked:
        if scenario_class(s).needs_arrival_rate and "qps" not in g and not find_max_qps:
            raise UsageError(f"scenario {s} needs an arrival rate: give --qps N (queries/s) or --find-max-qps")
    within = g.get("search_within")
    if within is not None and not find_max_qps:
        raise UsageError("--search-within sets where --find-max-qps stops: add --find-max-qps")
    return ServingConfig(qps=_qps(g["qps"]) if "qps" in g else None, slo_p99_ms=slo.get("slo_p99"),
                         slo_ttft_ms=slo.get("slo_ttft"), slo_tpot_ms=slo.get("slo_tpot"), max_batch=max_batch,
                         max_wait_ms=max_wait, find_max_qps=find_max_qps,
                         search_within_pct=None if within is None else _percent("--search-within", within))


def _taking(option: str) -> list[str]:
    """The scenarios that use a serving option."""
    return [n for n in runnable_scenarios() if option in scenario_class(n).serving_options]


def _percent(name: str, value) -> float:
    """A share in percent, from 5 or 5%: above 0, at most 100."""
    text = str(value).strip()
    try:
        pct = float(text[:-1] if text.endswith("%") else text) if not isinstance(value, bool) else -1.0
    except ValueError:
        pct = -1.0
    if not 0 < pct <= 100:
        raise UsageError(f"{name} {value!r} must be a percentage above 0 and at most 100: give e.g. {name} 10%")
    return pct


def _qps(value) -> float:
    try:
        qps = float(value) if not isinstance(value, bool) else -1.0
    except ValueError:
        qps = -1.0
    if not qps > 0 or qps == float("inf"):
        raise UsageError(f"--qps {value!r} must be a positive number of queries/s: give e.g. --qps 100")
    return qps


__all__ = ["RunConfig", "ServingConfig", "ENDPOINT_DEFAULT_SCENARIOS", "OPTIONS", "parse", "positive_int", "whole_number", "seconds",
           "milliseconds", "megabytes", "comma_list", "engine_options", "check_engine_options", "option_text",
           "known_precisions", "DURATION_OPTIONS"]
