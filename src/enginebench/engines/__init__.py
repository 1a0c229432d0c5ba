"""The engine registry: name -> "module:Class". Adding an engine is one module plus one line here."""

from __future__ import annotations

import importlib

from enginebench.engines.base import Engine, EngineInfo, EngineOptions, Session
from enginebench.errors import UsageError

REGISTRY: dict[str, str] = {
    "torch": "enginebench.engines.torch_eager:TorchEngine",
    "onnxruntime": "enginebench.engines.onnxruntime:OnnxRuntimeEngine",
}


def engine_class(name: str) -> type[Engine]:
    if name not in REGISTRY:
        raise UsageError(f"unknown engine {name!r}: use one of {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def require_engine(name: str) -> type[Engine]:
    """The engine class, or a UsageError saying how to install it."""
    cls = engine_class(name)
    missing = cls.missing()
    if missing:
        raise UsageError(f"engine {name!r} is not installed (missing {', '.join(missing)}): {cls.install_hint()}")
    return cls


def installed_engines() -> list[str]:
    return [name for name in REGISTRY if engine_class(name).installed()]


__all__ = ["REGISTRY", "Engine", "EngineInfo", "EngineOptions", "Session", "engine_class", "require_engine", "installed_engines"]
