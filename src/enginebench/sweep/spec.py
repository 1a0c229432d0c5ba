"""A sweep file: the matrix of `enginebench run` options in TOML, checked key by key before anything runs.

    engine = ["torch", "onnxruntime"]     # any option of `run`, named as its field: batch_size, load_timeout …
    batch_size = [1, 16]
    duration = "2s"

    [options.onnxruntime]                  # engine options; a list is one variant of the engine per value
    graph_optimization = ["basic", "all"]

    [[model]]                              # one table per model (or: model = "minilm", models = [...]);
    name = "minilm"                        # its keys override those above for that model
    [[model]]
    name = "smollm2-135m"
    prompt_len = [128]

The file is data only (tomllib): nothing in it is evaluated. A mistake is a UsageError naming the file, the
line and the key, with the close name for a misspelt one.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import socket
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from enginebench.config import OPTIONS, RunConfig, check_engine_options
from enginebench.engines import known_engines
from enginebench.execution.local import LocalLauncher
from enginebench.errors import UsageError
from enginebench.measure.machine import parse_cpu_list
from enginebench.plan import Cell, Plan
from enginebench.planning import plan_from_config
from enginebench.scenarios.registry import scenario_options
from enginebench.sweep.toml_lines import key_lines, line_of

_ENTRY_ONLY = {"name"}  # keys of a model table only
_TOP_ONLY = {"models", "cpus"}  # keys of the file's top level only (cpus pins the whole sweep)
_NOT_IDENTITY = {"retries", "max_memory"}  # how failures are handled does not change what a cell measures


def _run_fields() -> dict[str, str]:
    """`run`'s options (and those scenarios add) -> "list", "bool" or "text" (how a value is given)."""
    kinds = {o.name: o.kind for o in OPTIONS if o.name not in ("model", "option")}
    return kinds | {name: "list" if option.many else "text" for name, (_, option) in scenario_options().items()}


@dataclass
class Part:
    """One model (with its options) and one variant of its engines' options: a Plan, stored as one run."""

    key: str  # stable digest of what defines it (the cell keys start with it)
    label: str  # for people: the model, and the engine variant when there is one
    plan: Plan
    config: RunConfig  # the configuration measuring the same cells

    @property
    def argv(self) -> list[str]:
        """The `enginebench run` arguments measuring the same cells."""
        return self.config.to_argv()

    def cell_key(self, sweep_id: str, cell: Cell) -> str:
        serving = ""  # serving cells differ by their load too (rate, SLO, batcher)
        if cell.serving is not None:
            serving = "/" + ",".join(f"{k}={v}" for k, v in sorted(cell.serving.to_dict().items()))
        settings = ""  # a scenario's own settings (concurrency's clients) tell its cells apart
        if cell.settings is not None:
            settings = "/" + ",".join(f"{k}={v}" for k, v in sorted(cell.settings.to_dict().items()))
        return (f"{sweep_id}/{self.key}/{cell.engine}/{cell.precision}/{cell.scenario}/{cell.workload}"
                f"/b{cell.batch_size}/w{cell.workers}/t{cell.threads}{serving}{settings}")


@dataclass
class Sweep:
    sweep_id: str
    file: str
    spec: dict  # the parsed file
    parts: list[Part]
    cpus: str | None = None


def machine_key() -> str:
    """What tells this machine from another: the host name and, where there is one, the OS's machine id."""
    try:
        machine_id = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine_id = ""
    return f"{socket.gethostname()}:{machine_id}"


def sweep_id_of(file: Path, spec: dict, machine: str, work: list[str] = ()) -> str:
    """From the file's content (as parsed: comments and layout do not count), the machine and the identity of
    every cell it plans (`work`, store/identity.py: the model's and the corpus's content, every engine option's
    value, defaults included): a file whose model or corpus changed is another sweep, measured anew."""
    digest = hashlib.sha256(json.dumps([spec, machine, *([list(work)] if work else [])],
                                       sort_keys=True).encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", file.stem).strip("-") or "sweep"
    return f"{stem}-{digest}"


class _Checker:
    """Raises UsageErrors that name the file and the line of a key path."""

    def __init__(self, file: Path, text: str):
        self.file = file
        self.lines = key_lines(text)

    def fail(self, path: tuple, problem: str):
        line = line_of(self.lines, path)
        where = f"{self.file}, line {line}" if line else str(self.file)
        raise UsageError(f"{where}: {problem}")

    def unknown(self, path: tuple, known, place: str):
        key = path[-1]
        close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(sorted(known))}"
        self.fail(path, f"unknown key {key!r} {place}: {hint}")


def _text(checker: _Checker, path: tuple, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        checker.fail(path, f"{_dotted(path)} takes a text or a number, not {_toml_type(value)}")
    return str(value)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


def _toml_type(value) -> str:
    return {bool: "true/false", list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _run_value(checker: _Checker, path: tuple, kind: str, value):
    """A value as RunConfig.from_keywords takes it: lists of texts, a text, or a bool."""
    if kind == "bool":
        if not isinstance(value, bool):
            checker.fail(path, f"{_dotted(path)} takes true or false, not {value!r}")
        return value
    if kind == "list":
        items = value if isinstance(value, list) else [value]
        if not items:
            checker.fail(path, f"{_dotted(path)} is an empty list: give at least one value or leave it out")
        return [_text(checker, path, v) for v in items]
    return _text(checker, path, value)


def _engine_options(checker: _Checker, path: tuple, table) -> dict[str, dict[str, list[str]]]:
    """[options.ENGINE] tables -> {engine: {key: [values]}} (a single value is a list of one)."""
    if not isinstance(table, dict):
        checker.fail(path, "options is a table of engines: write [options.onnxruntime] and its keys under it")
    out = {}
    for engine, values in table.items():
        if engine not in known_engines():
            checker.unknown(path + (engine,), known_engines(), "in options (an engine name)")
        if not isinstance(values, dict):
            checker.fail(path + (engine,), f"options.{engine} is a table: write [options.{engine}] and key = value lines")
        out[engine] = {}
        for key, value in values.items():
            items = value if isinstance(value, list) else [value]
            if not items:
                checker.fail(path + (engine, key), f"options.{engine}.{key} is an empty list")
            out[engine][key] = [(str(v).lower() if isinstance(v, bool) else _text(checker, path + (engine, key), v))
                                for v in items]
    return out


def _entries(checker: _Checker, spec: dict) -> list[tuple[tuple, dict]]:
    """The model entries as (path in the file, table); a file without any is one entry of the defaults."""
    model, models = spec.get("model"), spec.get("models")
    if model is not None and models is not None:
        checker.fail(("models",), "give model (or [[model]] tables) or models, not both")
    if model is None and models is None:
        return [((), {})]
    if isinstance(model, str):
        return [((), {"name": model})]
    name, given = ("model", model) if model is not None else ("models", models)
    if not isinstance(given, list) or not given:
        checker.fail((name,), f"{name} takes a model name, a list of names or [[{name}]] tables")
    entries = []
    for i, entry in enumerate(given):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict):
            checker.fail((name, i), f"each of {name} is a model name or a table, not {_toml_type(entry)}")
        entries.append(((name, i), entry))
    return entries


def _message_key(message: str, kinds) -> str | None:
    """The option a planning error is about: the first flag it names (`--qps is for …: add --scenario server`
    is about --qps), else the noun it names."""
    found = {name: m.start() for name in kinds
             if (m := re.search(rf"(?<![\w-])--{name.replace('_', '-')}(?![\w-])", message))}
    if found:
        return min(found, key=found.get)
    nouns = {"engine": "engine", "precision": "precision", "workload": "workload", "scenario": "scenario",
             "model": "name", "decoder": "scenario"}
    for noun, key in nouns.items():
        if re.search(rf"\b{noun}\b", message):
            return key
    return None


def load_sweep(path: str, *, retries: str | None = None, max_memory: str | None = None,
               pin_cpus: bool = True) -> Sweep:
    """Read, check and expand a sweep file into its parts (each a checked Plan). `retries` and `max_memory`
    (the command line's) override the file's; the file's `cpus` pins this process (and its children) unless
    pin_cpus is False."""
    file = Path(path)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read sweep file {path}: {e}") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    checker = _Checker(file, text)
    kinds = _run_fields()
    top_keys = (set(kinds) | _TOP_ONLY | {"model", "options"})
    for key in spec:
        if key not in top_keys:
            checker.unknown((key,), top_keys, "in the sweep file")
    common = {k: _run_value(checker, (k,), kinds[k], v) for k, v in spec.items() if k in kinds and k != "cpus"}
    common_options = _engine_options(checker, ("options",), spec.get("options", {}))
    if retries is not None:
        common["retries"] = retries
    if max_memory is not None:
        common["max_memory"] = max_memory
    cpus = _text(checker, ("cpus",), spec["cpus"]) if "cpus" in spec else None
    if cpus and pin_cpus:
        _pin(checker, cpus)  # before planning: the default thread counts follow the CPUs this process may use
    parts: list[Part] = []
    for where, entry in _entries(checker, spec):
        entry_keys = (set(kinds) - _TOP_ONLY) | _ENTRY_ONLY | {"options"}
        given = dict(common)
        origin = {k: (k,) for k in given}
        for key, value in entry.items():
            if key not in entry_keys:
                place = "in a model table" + (" (it applies to the whole sweep: put it at the top)" if key in _TOP_ONLY else "")
                checker.unknown(where + (key,), entry_keys, place)
            if key in kinds:
                given[key] = _run_value(checker, where + (key,), kinds[key], value)
                origin[key] = where + (key,)
        if "name" in entry:
            origin["name"] = where + ("name",)
        name = _text(checker, where + ("name",), entry["name"]) if "name" in entry else None
        options = {e: dict(kv) for e, kv in common_options.items()}
        for e, kv in _engine_options(checker, where + ("options",), entry.get("options", {})).items():
            options.setdefault(e, {}).update(kv)
        parts += _expand(checker, where, name, given, origin, options, kinds)
    work = [LocalLauncher(part.plan).identity(cell).text() for part in parts for cell in part.plan.indexed_cells()]
    return Sweep(sweep_id_of(file, spec, machine_key(), work), str(file), spec, parts, cpus=cpus)


def _pin(checker: _Checker, cpus: str) -> None:
    import os

    try:
        os.sched_setaffinity(0, parse_cpu_list(cpus))
    except (ValueError, OSError) as e:
        checker.fail(("cpus",), f"cpus {cpus!r} is not usable here ({e}): give CPUs this machine has, e.g. "
                               f"cpus = \"0-{(os.cpu_count() or 1) - 1}\"")


def _expand(checker: _Checker, where: tuple, name: str | None, given: dict, origin: dict,
            options: dict[str, dict[str, list[str]]], kinds: dict) -> list[Part]:
    """One model entry's parts: its engines with their fixed options, then each engine that has lists of
    option values once per combination (only its own cells)."""
    fixed = {e: {k: v[0] for k, v in kv.items() if len(v) == 1} for e, kv in options.items()}
    varied = {e: {k: v for k, v in kv.items() if len(v) > 1} for e, kv in options.items()}
    varied = {e: kv for e, kv in varied.items() if kv}
    first = {e: {**fixed.get(e, {}), **{k: v[0] for k, v in varied.get(e, {}).items()}} for e in options}
    try:
        config = RunConfig.from_keywords(name, option={e: kv for e, kv in first.items() if kv}, **given)
        base = plan_from_config(config)
    except UsageError as e:
        if "--option" in str(e):
            engine_key = re.search(r"([\w-]+)\.([\w-]+)", str(e).split(":", 1)[-1])
            inner = ("options",) + ((engine_key[1], engine_key[2]) if engine_key else ())
            path = next((p for p in ([where + inner] if where else []) + [inner] if p in checker.lines), inner)
        else:
            key = _message_key(str(e), kinds)
            path = origin.get(key, where + ((key,) if key else ()))
        checker.fail(path, str(e))
    identity = {"model": name, **{k: v for k, v in given.items() if k not in _NOT_IDENTITY}}
    parts = []
    plain = [c for c in base.cells if c.engine not in varied]
    plain_skips = [(c, why) for c, why in base.skips if c.engine not in varied]
    if plain or plain_skips:
        plan = replace(base, cells=plain, skips=plain_skips,
                       engine_options={e: kv for e, kv in base.engine_options.items() if e not in varied})
        kept = {e: kv for e, kv in fixed.items() if kv and e not in varied}
        engines = (list(dict.fromkeys(c.engine for c in plain + [c for c, _ in plain_skips])) if varied
                   else config.engines)
        parts.append(_part(identity, kept, name or base.model.name, plan,
                           replace(config, engines=engines, engine_options=_texts(kept))))
    engines_run = {c.engine for c in base.cells} | {c.engine for c, _ in base.skips}
    for engine, lists in varied.items():
        if engine not in engines_run:
            continue
        keys = list(lists)
        for values in itertools.product(*(lists[k] for k in keys)):
            chosen = {**fixed.get(engine, {}), **dict(zip(keys, values))}
            try:
                check_engine_options({engine: chosen})
            except UsageError as e:
                bad = next((k for k in keys if f"{engine}.{k}" in str(e)), keys[0])
                inner = ("options", engine, bad)
                checker.fail(next((p for p in ([where + inner] if where else []) + [inner] if p in checker.lines),
                                  inner), str(e))
            plan = replace(base, cells=[c for c in base.cells if c.engine == engine],
                           skips=[(c, why) for c, why in base.skips if c.engine == engine],
                           engine_options={engine: {k: str(v) for k, v in chosen.items()}})
            label = f"{name or base.model.name} {engine} " + " ".join(f"{k}={v}" for k, v in zip(keys, values))
            parts.append(_part(identity, {engine: chosen}, label, plan,
                               replace(config, engines=[engine], engine_options=_texts({engine: chosen}))))
    return parts


def _texts(options: dict[str, dict]) -> dict[str, dict[str, str]]:
    return {engine: {k: str(v) for k, v in kv.items()} for engine, kv in options.items()}


def _part(identity: dict, engine_options: dict, label: str, plan: Plan, config: RunConfig) -> Part:
    digest = hashlib.sha256(json.dumps([identity, engine_options], sort_keys=True).encode()).hexdigest()[:8]
    return Part(digest, label, plan, config)


__all__ = ["Sweep", "Part", "load_sweep", "machine_key", "sweep_id_of"]
