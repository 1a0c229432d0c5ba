"""Checks of option values as a person types them (the command line, the Python API, a sweep file): whole
numbers, durations with units, comma lists, engine options. Each failure is a UsageError naming the fix."""

from __future__ import annotations

import math
import re

from enginebench.errors import UsageError

DURATION_OPTIONS = {"--duration": "10s", "--warmup": "1s", "--timeout": "10m", "--load-timeout": "30m"}  # -> example


def positive_int(name: str, text) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise UsageError(f"{name} {text!r} is not a whole number: give e.g. {name} 8") from None
    if value < 1:
        raise UsageError(f"{name} {value} must be at least 1")
    return value


_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s|m|h)?\s*")


def seconds(name: str, text, allow_zero: bool = False) -> float:
    """A duration in seconds from `10s`, `500ms`, `2m`, `1.5h` or a bare number of seconds."""
    example = f"{name} {DURATION_OPTIONS.get(name, '10s')}"
    match = _DURATION.fullmatch(str(text))
    value = float(match[1]) * _UNITS[match[2] or "s"] if match else math.nan
    if not math.isfinite(value):
        raise UsageError(f"{name} {text!r} is not a duration: give e.g. {example} (units ms, s, m, h; "
                         "a bare number is seconds)")
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"{name} {text!r} must be {'zero or more' if allow_zero else 'more than zero'}: "
                         f"give e.g. {example}")
    return value


def comma_list(values) -> list[str] | None:
    """Comma lists and repeated options, flattened, order kept, duplicates dropped. A str is one option."""
    if values is None:
        return None
    if isinstance(values, (str, int)):
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
    from enginebench.engines import engine_class

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


def check_engine_options(options: dict[str, dict]) -> None:
    from enginebench.engines import engine_class

    for engine, overrides in options.items():
        try:
            engine_class(engine).make_options(1, {k: str(v) for k, v in overrides.items()})
        except (KeyError, ValueError, TypeError) as e:  # the message names the engine, the option and its values
            raise UsageError(f"bad --option: {str(e).strip(chr(39))}") from None
