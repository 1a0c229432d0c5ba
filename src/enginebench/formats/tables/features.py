"""The engine feature table (`enginebench engines`): every engine enginebench knows, probed on this machine."""

from __future__ import annotations

import dataclasses
import json

from enginebench.engines import engine_class, known_engines
from enginebench.engines.base import EngineInfo
from enginebench.engines.unavailable import unavailable_engines
from enginebench.formats.terminal import print_table

# Two tables, so each fits a terminal: what an engine can run, then what it runs on and how to get it.
CAPABILITIES = ("engine", "status", "version", "devices", "precisions", "bits", "formats")
BACKGROUND = ("engine", "backend", "parallel", "training", "install / reason")


def status(info: EngineInfo) -> str:
    if not info.available:
        return "unavailable"
    return "installed" if info.installed else "not installed"


def probe_engines() -> list[EngineInfo]:
    """The registry's engines (probed: version, devices, backend) then the known-but-unavailable ones."""
    infos = []
    for name in known_engines():
        try:
            infos.append(engine_class(name).describe())
        except Exception as e:  # a broken install must not hide the rest of the table
            infos.append(EngineInfo(name=name, library="?", version=None, install="", precisions=(), devices=(),
                                    formats=(), notes=f"probe failed: {type(e).__name__}: {e}"))
    return infos + unavailable_engines()


def to_dicts(infos: list[EngineInfo]) -> list[dict]:
    return [{**dataclasses.asdict(i), "installed": i.installed, "status": status(i)} for i in infos]


def to_json(infos: list[EngineInfo]) -> str:
    return json.dumps(to_dicts(infos), indent=2)


def _text(values) -> str:
    return ", ".join(values) or "—"


def _rows(i: EngineInfo) -> tuple[list[str], list[str]]:
    install = "; ".join(x for x in (i.notes, i.install) if x)
    return ([i.name, status(i), i.version or "—", _text(i.devices), _text(i.precisions), _text(i.bits),
             _text(i.formats)],
            [i.name, i.backend or "—", i.parallelism or "—", i.training or "—", install or "—"])


def render_feature_table(infos: list[EngineInfo], console=None) -> None:
    """Two tables, each folded to the terminal's width (Markdown off a terminal); not-installed rows dimmed."""
    from rich.console import Console

    console = console or Console()
    titles = ("engines on this machine (precisions: what enginebench runs; bits: what the library offers)",
              "backends, parallelism, training, install")
    styles = [None if info.installed else "dim" for info in infos]
    for n, (title, columns) in enumerate(zip(titles, (CAPABILITIES, BACKGROUND))):
        print_table(console, title, list(columns), [_rows(info)[n] for info in infos], keys=1, left=set(columns),
                    styles=styles)
