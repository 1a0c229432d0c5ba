"""An engine whose extra is installed must import: engine tests skip when a library is absent (importorskip),
so a library that is installed but broken (a bad wheel, a missing shared object) would otherwise pass silently."""

from __future__ import annotations

import importlib
import os
from importlib import metadata

import pytest

from enginebench.engines import REGISTRY, engine_class


def _distribution_installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.engine
@pytest.mark.parametrize("engine", sorted(REGISTRY))
def test_an_installed_engine_imports(engine):
    cls = engine_class(engine)
    if not _distribution_installed(cls.library):
        if os.environ.get("CI"):
            pytest.fail(f"{engine}: {cls.library} is not installed, but CI installs every extra ({cls.install_hint()})")
        pytest.skip(f"{cls.library} is not installed")
    for module in cls.requires:
        importlib.import_module(module)  # raises, and fails the test, when the installed library is broken
    assert cls.installed() and cls.version()
