"""ONNX Runtime dynamic int8 quantization of the exported encoder, cached as an artifact.

Settings (measured on all-MiniLM-L6-v2, 32 corpus sentences x 128 tokens, min cosine vs torch fp32):
  quantize_dynamic defaults (every MatMul/Gather/..., per-tensor)      0.922
  MatMul with constant weights only, per-channel                        0.989
  the same, FFN down-projections (weight K > N) left in fp32            0.996  <- used
The down-projection's input is the GELU output, whose outliers make a per-tensor uint8 activation scale coarse.
What the file really holds (which MatMuls became MatMulInteger, their share of the weight-MatMul FLOPs) is read
back from the quantized graph when a session loads it (measure/quantization.py), not taken from these settings.
"""

from __future__ import annotations

import logging

import time
from importlib import metadata
from pathlib import Path

from enginebench.models.artifacts import artifact_key, cached_artifact

QUANTIZED_FILE = "model.int8.onnx"
SETTINGS = {
    "weight_type": "QInt8",
    "per_channel": True,
    "op_types_to_quantize": ["MatMul"],
    "MatMulConstBOnly": True,
    "fp32_nodes": "down-projections (MatMul weight with more rows than columns)",
}


def quantized_onnx(source: Path, source_key: str) -> tuple[Path, dict]:
    """The int8 version of the ONNX file `source` (cached under `source_key` + quantizer version + settings)."""
    version = metadata.version("onnxruntime")
    key = artifact_key(source_key, "onnxruntime.quantization.quantize_dynamic", version, repr(sorted(SETTINGS.items())))
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx-int8", key, lambda out: _quantize(source, out / QUANTIZED_FILE))
    details = {
        "int8_cached": cached, "int8_quantize_s": round(time.perf_counter() - started, 3),
        "quantizer": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {version})", "int8_settings": SETTINGS,
        "onnx_path": str(folder / QUANTIZED_FILE),
    }
    return folder / QUANTIZED_FILE, details


def down_projections(model) -> list[str]:
    """MatMul nodes whose constant weight maps a wider input to a narrower output (BERT's FFN output dense)."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
            found.append(node.name)
    return found


def _quantize(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from enginebench.measure.quantization import onnx_outline

    keep_fp32 = down_projections(onnx_outline(source))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" advice would land in the middle of our table
    try:
        quantize_dynamic(
            str(source), str(out), weight_type=QuantType.QInt8, per_channel=SETTINGS["per_channel"],
            op_types_to_quantize=SETTINGS["op_types_to_quantize"], nodes_to_exclude=keep_fp32,
            extra_options={"MatMulConstBOnly": SETTINGS["MatMulConstBOnly"]},
        )
    finally:
        root.setLevel(level)
