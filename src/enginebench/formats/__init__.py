"""The output format registry: name -> "module:Class", each class behind formats/base.py's contract. Adding a
format is one module plus one line here; `show --format` offers those that render runs, `compare --format`
those that render a comparison."""

from __future__ import annotations

import importlib

from enginebench.errors import UsageError
from enginebench.formats.base import COMPARISON, RUNS, Format, Subject

REGISTRY: dict[str, str] = {
    "table": "enginebench.formats.console:ConsoleTable",
    "json": "enginebench.formats.json:Json",
    "csv": "enginebench.formats.csv:Csv",
    "md": "enginebench.formats.md:Markdown",
    "parquet": "enginebench.formats.parquet:Parquet",
    "html": "enginebench.formats.html:Html",
    "png": "enginebench.formats.png:Png",
    "junit": "enginebench.formats.junit:JUnit",
    "requests": "enginebench.formats.requests:Requests",
}


def format_class(name: str) -> type[Format]:
    if name not in REGISTRY:
        raise UsageError(f"unknown format {name!r}: use one of {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_format(name: str) -> Format:
    return format_class(name)()


def format_names(kind: str) -> list[str]:
    """The formats that render `kind` (RUNS or COMPARISON), in the registry's order."""
    return [name for name in REGISTRY if kind in format_class(name).renders]


class Choices:
    """argparse choices read from the registry when asked: a command's parser imports no format module until
    its --format is checked (one module) or listed (--help, a wrong name: all of them)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __contains__(self, name) -> bool:
        return name in REGISTRY and self.kind in format_class(name).renders

    def __iter__(self):
        return iter(format_names(self.kind))


__all__ = ["REGISTRY", "Format", "Subject", "RUNS", "COMPARISON", "format_class", "get_format", "format_names",
           "Choices"]
