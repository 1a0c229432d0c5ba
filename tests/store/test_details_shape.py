"""Every key a Result's or a Measurement's `details` can hold is declared in store/records.py (ResultDetails,
MeasurementDetails): each key the source writes into something named `details`, found by reading the source
(ast), and each key of the results in the fixture databases older code wrote (tests/fixtures)."""

from __future__ import annotations

import ast
import shutil
from functools import cache
from pathlib import Path

import pytest

import enginebench
from enginebench.store.database import ResultStore
from enginebench.store.records import MeasurementDetails, ResultDetails
from enginebench.store.shapes import undeclared

SRC = Path(enginebench.__file__).parent
FIXTURES = Path(__file__).parents[1] / "fixtures"

# dicts named `details` that are not a Result's nor a Measurement's: (module under enginebench/, function)
NOT_RESULT_DETAILS = {
    ("measure/roofline.py", "measure_machine"),  # an `enginebench machine` row's (the machine_speed table)
}
# calls that read rather than build a dict: `details = speed.get("details")` makes `get` no producer of keys
NOT_PRODUCERS = {"get", "dict", "field", "pop", "setdefault"}


def declared() -> set[str]:
    """Every key either record declares (both extend EngineDetails and MeasuredDetails)."""
    return {k for record in (ResultDetails, MeasurementDetails)
            for k in record.__required_keys__ | record.__optional_keys__}


# -- what the source writes into details -------------------------------------------------------------------------
def _str(node) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _keys(node) -> list[str]:
    """The keys a key expression can be: a string, or either string of a conditional."""
    if isinstance(node, ast.IfExp):
        return _keys(node.body) + _keys(node.orelse)
    return [_str(node)] if _str(node) is not None else []


def _is_details(node) -> bool:
    """`details`, `graph_details`, `x.details`, `x["details"]`."""
    if isinstance(node, ast.Name):
        return node.id.endswith("details")
    if isinstance(node, ast.Attribute):
        return node.attr == "details"
    return isinstance(node, ast.Subscript) and _str(node.slice) == "details"


def _called(call: ast.Call) -> str | None:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


class _Module:
    def __init__(self, path: Path):
        self.where = path.relative_to(SRC).as_posix()
        self.tree = ast.parse(path.read_text(), str(path))
        self.parents = {child: node for node in ast.walk(self.tree) for child in ast.iter_child_nodes(node)}
        self.functions = [n for n in self.parents if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]

    def function(self, node) -> ast.FunctionDef | None:
        while node in self.parents:
            node = self.parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None


class _Collector:
    """Keys written into details: `details["k"] = v`, `details.setdefault("k", ...)`, `details.update(k=v,
    **f(), {"k": v})`, `details = {"k": v, **other}` (also `x.details`, `graph_details`, `x["details"]`), a
    `details={...}` keyword (Measurement, build_result, replace, ...), `{"details": {...}}`, NotRunnable's
    details. A `**spread` or an unpacked `path, details = f(...)` follows the dict literals a function or a
    local name holds; a function met so (a producer: `torch_threads`, `gguf_file`, ...) gives the keys of the
    dicts it returns."""

    def __init__(self):
        self.modules = [_Module(p) for p in sorted(SRC.rglob("*.py"))]
        self.functions: dict[str, list[tuple[_Module, ast.FunctionDef]]] = {}
        for module in self.modules:
            for fn in module.functions:
                self.functions.setdefault(fn.name, []).append((module, fn))
        self.found: list[tuple[str, str]] = []  # (key, module:line)
        self.producers: set[str] = set()

    def add(self, key: str, module: _Module, node) -> None:
        self.found.append((key, f"{module.where}:{node.lineno}"))

    def producer(self, call) -> None:
        if isinstance(call, ast.Call) and _called(call) not in NOT_PRODUCERS | {None}:
            self.producers.add(_called(call))

    def literal(self, module: _Module, node) -> None:
        """The top-level keys of a dict literal or dict(...), following its spreads."""
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if k is None:
                    self.spread(module, v, node)
                for key in _keys(k) if k is not None else ():
                    self.add(key, module, k)
        elif isinstance(node, ast.Call) and _called(node) == "dict":
            for kw in node.keywords:
                if kw.arg:
                    self.add(kw.arg, module, kw.value)
                else:
                    self.spread(module, kw.value, node)
        else:
            self.producer(node)

    def spread(self, module: _Module, node, where) -> None:
        """`**node`: a dict literal, either dict of a conditional, a producer's, or a local name's."""
        if isinstance(node, ast.IfExp):
            self.spread(module, node.body, where)
            self.spread(module, node.orelse, where)
        elif isinstance(node, ast.Dict):
            self.literal(module, node)
        elif isinstance(node, ast.Call):
            self.producer(node)
        elif isinstance(node, ast.Name) and not _is_details(node):
            self.local(module, node.id, module.function(where))

    def local(self, module: _Module, name: str, fn, calls: bool = True) -> None:
        """What a local name holds: the dicts (and with `calls`, the producers) assigned to it, and the keys
        written into it."""
        for node in ast.walk(fn) if fn is not None else ():
            if not isinstance(node, ast.Assign):
                continue
            for t in node.targets:
                named = [t] if isinstance(t, ast.Name) else list(t.elts) if isinstance(t, ast.Tuple) else []
                if any(isinstance(e, ast.Name) and e.id == name for e in named) and (
                        calls or not isinstance(node.value, ast.Call)):
                    self.literal(module, node.value)
                if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name:
                    for key in _keys(t.slice):
                        self.add(key, module, t)

    def written(self, module: _Module, node) -> None:
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            if module.function(node) is None:  # a class's field (`details: dict = field(...)`) writes no key
                return
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Subscript) and _is_details(t.value):
                    for key in _keys(t.slice):
                        self.add(key, module, t)
                elif _is_details(t) and node.value is not None:
                    self.literal(module, node.value)
                elif isinstance(t, ast.Tuple) and any(_is_details(e) for e in t.elts):
                    self.producer(node.value)  # path, details = onnx_encoder(model)
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and _is_details(f.value) and f.attr == "update":
                for kw in node.keywords:
                    if kw.arg:
                        self.add(kw.arg, module, kw.value)
                    else:
                        self.spread(module, kw.value, node)
                for a in node.args:
                    if isinstance(a, ast.Dict):
                        self.literal(module, a)
                    else:
                        self.spread(module, a, node)
            elif isinstance(f, ast.Attribute) and _is_details(f.value) and f.attr == "setdefault" and node.args:
                for key in _keys(node.args[0]):
                    self.add(key, module, node)
            for kw in node.keywords:
                if kw.arg == "details":
                    self.literal(module, kw.value) if isinstance(kw.value, ast.Dict) else self.spread(
                        module, kw.value, node)
            if _called(node) == "NotRunnable" and len(node.args) > 1:
                self.literal(module, node.args[1])
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                if k is not None and _str(k) == "details" and isinstance(v, ast.Dict):
                    self.literal(module, v)

    def collect(self) -> list[tuple[str, str]]:
        for module in self.modules:
            for node in ast.walk(module.tree):
                fn = module.function(node)
                if fn is None or (module.where, fn.name) not in NOT_RESULT_DETAILS:
                    self.written(module, node)
        done: set[str] = set()
        while self.producers - done:
            name = min(self.producers - done)
            done.add(name)
            for module, fn in self.functions.get(name, ()):
                self.returned(module, fn)
        return self.found

    def returned(self, module: _Module, fn) -> None:
        for node in ast.walk(fn):
            if isinstance(node, ast.Return) and node.value is not None:
                for v in node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]:
                    if isinstance(v, ast.Name):
                        if not _is_details(v):  # a returned `details` is collected where it is written
                            self.local(module, v.id, fn, calls=False)  # `return module, ...`: no dict
                    elif isinstance(v, ast.Dict) or isinstance(v, ast.Call) and _called(v) == "dict":
                        self.literal(module, v)


@cache
def written_keys() -> dict[str, list[str]]:
    """key -> where it is written (module:line)."""
    keys: dict[str, list[str]] = {}
    for key, where in _Collector().collect():
        keys.setdefault(key, []).append(where)
    return keys


def test_the_collector_finds_the_keys_written_today():
    """It must find what it looks for, or the test below would pass by finding nothing."""
    found = written_keys()
    known = {"quantization", "gemm_probe", "node", "attempts", "failure", "set_apart", "workload", "stopping_rule",
             "reference_error", "model_structure", "machine_speed", "threads_used", "executed_precision_source",
             "compiled", "client_part", "client_nodes", "window", "requests", "measured_between", "op", "notes",
             "wall_s", "processes", "positions_per_item", "generations", "prefills",  # a conditional key
             "serving_settings",  # in a conditional spread
             "threads_note",  # in a dict a producer (onnxruntime_cpu.threads_readback) returns
             "gguf_cached", "onnx_cached", "cut_at"}  # in dicts producers return to an engine's load
    assert known <= set(found), sorted(known - set(found))
    assert len(found) >= 120


def test_every_key_written_into_details_is_declared():
    known = declared()
    missing = {k: where for k, where in written_keys().items() if k not in known}
    assert not missing, ("keys written into details but not declared in store/records.py (ResultDetails, "
                         "MeasurementDetails or the records they extend):\n"
                         + "\n".join(f"  {k}: {', '.join(where)}" for k, where in sorted(missing.items())))


# -- what older code stored ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [2, 3, 4])
def test_every_key_of_a_stored_results_details_is_declared(version, tmp_path):
    db = tmp_path / f"schema{version}.db"
    shutil.copy(FIXTURES / f"schema{version}.db", db)  # opening a database brings its schema number up to date
    seen: dict[str, str] = {}
    deeper: list[str] = []  # keys within a declared key's value that its record does not declare
    with ResultStore(db) as store:
        for run_id, _, _ in store.run_ids():
            for r in store.load_run(run_id).results:
                for key in r.details:
                    seen.setdefault(key, f"result {r.engine}/{r.scenario}/{r.workload} of run {run_id}")
                deeper += [f"{path} of {r.engine}/{r.scenario} in run {run_id}" for path in undeclared(r)
                           if path.startswith("details.") and path.split(".")[1] in declared()]
                for rep in r.repetitions:
                    for key in ((rep.get("measurement") or {}).get("details") or {}):
                        seen.setdefault(key, f"a repetition's measurement of {r.engine}/{r.scenario} of {run_id}")
    assert len(seen) > 20  # the fixture holds what it should
    known = declared()
    missing = {k: where for k, where in seen.items() if k not in known}
    assert not missing, (f"keys of details stored in schema{version}.db but not declared in store/records.py:\n"
                         + "\n".join(f"  {k}: {where}" for k, where in sorted(missing.items())))
    assert not deeper, "\n".join(deeper)
