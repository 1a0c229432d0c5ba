"""The engine registry: name -> "module:Class". Adding an engine is one module plus one line here."""

from __future__ import annotations

import importlib
import os

from enginebench.engines.base import Engine, EngineInfo, EngineOptions, Session
from enginebench.errors import UsageError

REGISTRY: dict[str, str] = {
    "torch": "enginebench.engines.torch_eager:TorchEngine",
    "onnxruntime": "enginebench.engines.onnxruntime:OnnxRuntimeEngine",
    "openvino": "enginebench.engines.openvino:OpenVinoEngine",
    "torch-compile": "enginebench.engines.torch_compile:TorchCompileEngine",
    "jax": "enginebench.engines.jax_xla:JaxEngine",
    "ctranslate2": "enginebench.engines.ctranslate2:CTranslate2Engine",
    "tinygrad": "enginebench.engines.tinygrad_engine:TinygradEngine",
    "llamacpp": "enginebench.engines.llamacpp:LlamaCppEngine",
    "sentence-transformers": "enginebench.engines.sentence_transformers_engine:SentenceTransformersEngine",
    "endpoint": "enginebench.engines.endpoint:EndpointEngine",
}


def _plugins() -> dict[str, str]:
    """Engines outside the package: ENGINEBENCH_ENGINES="name=module:Class,other=module:Class"."""
    found = {}
    for item in os.environ.get("ENGINEBENCH_ENGINES", "").split(","):
        name, eq, target = item.partition("=")
        if eq and ":" in target:
            found[name.strip()] = target.strip()
    return found


def _all() -> dict[str, str]:
    return {**REGISTRY, **_plugins()}


def engine_class(name: str) -> type[Engine]:
    registry = _all()
    if name not in registry:
        raise UsageError(f"unknown engine {name!r}: use one of {', '.join(registry)}")
    module, _, cls = registry[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def require_engine(name: str) -> type[Engine]:
    """The engine class, or a UsageError saying how to install it."""
    cls = engine_class(name)
    missing = cls.missing()
    if missing:
        raise UsageError(f"engine {name!r} is not installed (missing {', '.join(missing)}): {cls.install_hint()}")
    return cls


def known_engines() -> list[str]:
    """Every engine name: the registry's, then plugins'."""
    return list(_all())


def installed_engines() -> list[str]:
    """The engines a run takes by default: installed here (a remote endpoint is asked for, never assumed)."""
    return [name for name in _all() if engine_class(name).installed() and not engine_class(name).remote]


__all__ = ["REGISTRY", "Engine", "EngineInfo", "EngineOptions", "Session", "engine_class", "require_engine", "installed_engines", "known_engines"]
