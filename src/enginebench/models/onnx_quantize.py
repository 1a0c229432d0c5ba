"""ONNX Runtime int8 quantization of the exported encoder (dynamic), cached as an artifact (a decoder's int8 is
built quantized: models/onnx_decoder_build.py).

Settings (measured on all-MiniLM-L6-v2, 32 corpus sentences x 128 tokens, min cosine vs torch fp32):
  quantize_dynamic defaults (every MatMul/Gather/..., per-tensor)      0.922
  MatMul with constant weights only, per-channel                        0.989
  the same, FFN down-projections (weight K > N) left in fp32            0.996  <- used
The down-projection's input is the GELU output, whose outliers make a per-tensor uint8 activation scale coarse.
`-o onnxruntime.int8_layers=all` quantizes the down-projections too (the 0.989 row): every result measures its
own fidelity, and `tune`, which tries both, drops it below --min-fidelity.
What the file really holds (which MatMuls became MatMulInteger, their share of the weight-MatMul FLOPs) is read
back from the quantized graph when a session loads it (measure/quantization.py), not taken from these settings.
"""

from __future__ import annotations

import contextlib
import logging
import time
from importlib import metadata
from pathlib import Path

from enginebench.measure.quantization import onnx_outline
from enginebench.models.artifacts import artifact_key, cached_artifact
from enginebench.models.int8_layers import INT8_LAYERS, is_kept_fp32

QUANTIZED_FILE = "model.int8.onnx"
SETTINGS = {
    "weight_type": "QInt8",
    "per_channel": True,
    "op_types_to_quantize": ["MatMul"],
    "MatMulConstBOnly": True,
    "fp32_nodes": "down-projections (MatMul weight with more rows than columns)",
}


def settings(int8_layers: str = "no-ffn-down") -> dict:
    """SETTINGS for a choice of INT8_LAYERS (what the artifact is keyed by and the result says)."""
    if int8_layers not in INT8_LAYERS:
        raise ValueError(f"int8_layers must be one of {', '.join(INT8_LAYERS)}")
    return SETTINGS if int8_layers == "no-ffn-down" else {**SETTINGS, "fp32_nodes": "none: every weight MatMul"}


def quantized_onnx(source: Path, source_key: str, int8_layers: str = "no-ffn-down") -> tuple[Path, dict]:
    """The int8 version of the ONNX file `source` (cached under `source_key` + quantizer version + settings)."""
    version = metadata.version("onnxruntime")
    chosen = settings(int8_layers)
    key = artifact_key(source_key, "onnxruntime.quantization.quantize_dynamic", version, repr(sorted(chosen.items())))
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx-int8", key,
                                     lambda out: _quantize(source, out / QUANTIZED_FILE, int8_layers))
    details = {
        "int8_cached": cached, "int8_artifact_s": round(time.perf_counter() - started, 3),
        "quantizer": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {version})", "int8_settings": chosen,
        "onnx_path": str(folder / QUANTIZED_FILE),
    }
    return folder / QUANTIZED_FILE, details


def kept_fp32(model, int8_layers: str) -> list[str]:
    """The MatMul nodes (with a constant [in, out] weight) that a choice of int8_layers leaves in fp32."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape is not None and len(shape) == 2 and is_kept_fp32(shape[0], shape[1], int8_layers):
            found.append(node.name)
    return found


def _quantize(source: Path, out: Path, int8_layers: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_fp32 = kept_fp32(onnx_outline(source), int8_layers)
    with _quiet():
        quantize_dynamic(
            str(source), str(out), weight_type=QuantType.QInt8, per_channel=SETTINGS["per_channel"],
            op_types_to_quantize=SETTINGS["op_types_to_quantize"], nodes_to_exclude=keep_fp32,
            extra_options={"MatMulConstBOnly": SETTINGS["MatMulConstBOnly"]},
        )


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizers log advice ("consider pre-processing", each node quantized) on the root logger:
    it would land in the middle of our table."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
