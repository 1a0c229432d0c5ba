"""A partial model: the exported ONNX encoder cut at one node's output (`run --until NODE`)."""

from __future__ import annotations

from dataclasses import replace

from enginebench.errors import UsageError
from enginebench.models.onnx_export import onnx_encoder
from enginebench.models.onnx_graph import resolve_cut

#: the reference a cut model is compared with: fp32 on the same cut graph (torch cannot run a cut graph)
CUT_REFERENCE_ENGINE = "onnxruntime"


def cut_model_spec(model, until: str):
    """`model` cut at node (or tensor) `until`; UsageError naming the fix if the graph has no such node."""
    if model.kind != "encoder":
        raise UsageError(f"--until cuts the exported ONNX encoder; {model.name} is a {model.kind}")
    path, _ = onnx_encoder(replace(model, until=None))
    resolve_cut(path, until, model.name)
    return replace(model, until=until)
