"""Which engines `enginebench ops` times: numpy (the reference row) and every engine whose class names its
`op_kernels` (engines/kernels.py), the registry's and plugins' alike."""

from __future__ import annotations

import numpy as np

from enginebench.engines import engine_class, known_engines
from enginebench.engines.kernels import Kernels
from enginebench.errors import UsageError
from enginebench.scenarios.ops.numpy_kernels import NumpyKernels

REFERENCE = "numpy"


def ops_engines() -> list[str]:
    return [REFERENCE] + [name for name in known_engines() if engine_class(name).op_kernels is not None]


def kernels_class(name: str) -> type[Kernels]:
    if name == REFERENCE:
        return NumpyKernels
    kernels = engine_class(name).op_kernels
    if kernels is None:
        raise UsageError(f"engine {name!r} has no operator kernels: choose among {', '.join(ops_engines())}")
    return kernels


def installed(name: str) -> bool:
    return not kernels_class(name).missing()


def install_hint(name: str) -> str:
    return "pip install numpy" if name == REFERENCE else engine_class(name).install_hint()


def version(name: str) -> str | None:
    return np.__version__ if name == REFERENCE else engine_class(name).version()


__all__ = ["REFERENCE", "ops_engines", "kernels_class", "installed", "install_hint", "version"]
