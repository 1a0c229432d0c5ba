"""Export the sentence encoder to ONNX once, cached by model content and exporter version.

The export runs in its own Python process: the engine that uses the file (ONNX Runtime, OpenVINO, ...) then
never has PyTorch in its memory, so its peak RSS is its own.
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

from enginebench.models.artifacts import artifact_key, cached_artifact, convert_in_subprocess
from enginebench.models.onnx_graph import cut_model
from enginebench.models.spec import ModelSpec

OPSET = 17
EXPORTER = "torch.onnx-legacy"  # the TorchScript exporter: ~1 s here vs ~15 s for dynamo, same graph for BERT
EXPORT_FORMAT_VERSION = "1"  # bump when the exported graph changes (inputs, pooling, opset)
ONNX_FILE = "model.onnx"


def onnx_encoder(model: ModelSpec) -> tuple[Path, dict]:
    """Path of the exported model.onnx and facts about the export (cached or not, seconds spent)."""
    torch_version = metadata.version("torch")
    key = onnx_key(model)
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx", key, lambda out: convert_in_subprocess(
        "enginebench.models.onnx_export", model.path, str(out / ONNX_FILE), what="ONNX export"))
    details = {
        "onnx_cached": cached, "onnx_export_s": round(time.perf_counter() - started, 3),
        "exporter": f"{EXPORTER} (torch {torch_version}, opset {OPSET})", "onnx_path": str(folder / ONNX_FILE),
    }
    if model.until:  # a partial model: the graph pruned to what that node's output needs
        path, cut = cut_model(folder / ONNX_FILE, key, model.until)
        return path, {**details, **cut}
    return folder / ONNX_FILE, details


def onnx_key(model: ModelSpec) -> str:
    """The cache key of the full export (cuts and blocks are keyed under it)."""
    return artifact_key(model.content_hash, EXPORTER, metadata.version("torch"), str(OPSET), EXPORT_FORMAT_VERSION)


def export(model_path: str, out: Path) -> None:
    import warnings

    import torch

    from enginebench.models.torch_encoder import load_sentence_encoder

    module = load_sentence_encoder(model_path, torch.float32, attention="eager")
    names = module.input_names
    example = tuple(torch.ones((2, 8), dtype=torch.int64) for _ in names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["sentence_embedding"] = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(out), input_names=names, output_names=["sentence_embedding"],
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


if __name__ == "__main__":
    export(sys.argv[1], Path(sys.argv[2]))
