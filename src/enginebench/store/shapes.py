"""Is every key a Result holds declared? Its dict fields are typed records (TypedDicts in store/model.py and
store/records.py) kept as plain dicts; `undeclared(result)` lists the keys, by path, that none of its field's
declared shapes names.

The test suite sets ENGINEBENCH_STRICT_SHAPES=1 (tests/conftest.py; the processes it starts inherit it): every
result built (store/derive.py) is then checked, and one with an undeclared key is refused, so a figure added
without its declaration fails the tests instead of reaching a stored run unnoticed. A user's run is not
checked: a shape mistake must not cost a measurement."""

from __future__ import annotations

import os
import types
import typing
from functools import cache

from enginebench.store.model import Result

STRICT_ENV = "ENGINEBENCH_STRICT_SHAPES"


def strict() -> bool:
    return os.environ.get(STRICT_ENV) == "1"


@cache
def _hints(typed) -> dict:
    return typing.get_type_hints(typed)


def _options(hint) -> list:
    """The alternatives a hint allows, NotRequired and Optional unwrapped."""
    origin = typing.get_origin(hint)
    if origin is typing.NotRequired or origin is typing.Required:
        return _options(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [o for arg in typing.get_args(hint) for o in _options(arg)]
    return [hint]


def _missing(value, hint, path: str) -> list[str]:
    """Keys of `value` (and of what it holds) that `hint` does not declare; [] where the hint is open (dict,
    Any) or the value is not a container the hint describes."""
    best = None
    for option in _options(hint):
        found = _missing_one(value, option, path)
        if found is None:
            continue
        if not found:
            return []
        best = found if best is None or len(found) < len(best) else best
    return best or []


def _missing_one(value, hint, path: str) -> list[str] | None:
    """None: `hint` does not describe this kind of value."""
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return None
        hints = _hints(hint)
        out = []
        for key, item in value.items():
            if key not in hints:
                out.append(f"{path}.{key}")
            else:
                out += _missing(item, hints[key], f"{path}.{key}")
        return out
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and isinstance(value, list):
        return [k for i, item in enumerate(value) for k in _missing(item, args[0], f"{path}[{i}]")] if args else []
    if origin is dict and isinstance(value, dict):
        return [k for key, item in value.items() for k in _missing(item, args[1], f"{path}.{key}")] if args else []
    if hint is dict and isinstance(value, dict) or hint is list and isinstance(value, list):
        return []
    return [] if not isinstance(value, (dict, list)) else None


def undeclared(result: Result) -> list[str]:
    """Every key, by path (`serving.find_max_qps.trials[0].p99_ms`), that the result's field declares nowhere."""
    hints = _hints(Result)
    out = []
    for name, hint in hints.items():
        value = getattr(result, name)
        if isinstance(value, (dict, list)) and value:
            out += _missing(value, hint, name)
    return out


def check(result: Result) -> Result:
    """Under ENGINEBENCH_STRICT_SHAPES=1, refuse a result that holds an undeclared key (ValueError naming them)."""
    if strict():
        found = undeclared(result)
        if found:
            raise ValueError(f"undeclared keys in a {result.scenario} result: {', '.join(found[:10])}: declare them "
                             "in store/model.py or store/records.py")
    return result


__all__ = ["undeclared", "check", "strict", "STRICT_ENV"]
