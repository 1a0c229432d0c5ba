"""ONNX Runtime static (calibrated) int8 quantization of the exported encoder, cached as an artifact.

`quantize_static`, QDQ format: per-channel int8 weights, per-tensor uint8 activations whose scales come from
calibration inputs (workloads/calibration.py, kept apart from the measured inputs). Measured on
all-MiniLM-L6-v2 (32 corpus inputs x 128 tokens, seed 0, min cosine vs torch fp32, 24 calibration documents):

  every weight MatMul                                    MinMax 0.913   Percentile 0.900
  FFN down-projections in fp32 (67% of MatMul FLOPs)     MinMax 0.988   Percentile 0.990 (0.988 with 7-bit weights)
  whole FFN in fp32 (attention projections, 33%)         MinMax 0.994   Percentile 0.995  <- used (7-bit weights)
The one used keeps 0.9946-0.9954 on corpus and titles over seeds 0, 3 and 5 (each with its own calibration set).

Static scales are fixed, so an activation with outliers (the LayerNorm output feeding the FFN, the GELU
output feeding its down-projection) is either clipped or coarse for every input; a dynamic scale adapts per
call, which is why onnx_quantize.py's dynamic graph keeps more of the FFN. Percentile (99.999th) calibration
is used because it beat MinMax in every configuration tried: with a few dozen calibration inputs, MinMax
fits each scale to one extreme value.

Weights use 7 bits (reduce_range): MLAS multiplies uint8 activations by int8 weights; on CPUs without VNNI
(AVX2, AVX-512 without VNNI) its kernels add byte-pair products in int16 (vpmaddubsw), which saturate with
8-bit weights (2 x 255 x 127 > 32767) but not with 7-bit ones (2 x 255 x 64 < 32767). So the integer sums,
and the embeddings, are the same with or without VNNI; ONNX Runtime's maintainers recommend it for
per-channel weights on such CPUs (microsoft/onnxruntime#12072).

MatMulConstBOnly does not keep the attention products float in QDQ format: Q·Kᵀ and P·V get QDQ pairs too, and
the session fuses them into QLinearMatMul. The read-back counts them (details.quantization.attention_products)
and the compute roofline puts them against the int8 ceiling.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from importlib import metadata
from pathlib import Path

from enginebench.measure.quantization import onnx_outline
from enginebench.models.artifacts import artifact_key, cached_artifact
from enginebench.workloads.calibration import CalibrationSet

STATIC_FILE = "model.int8-static.onnx"
FACTS_FILE = "quantize.json"
SETTINGS = {
    "quant_format": "QDQ",
    "weight_type": "QInt8",
    "activation_type": "QUInt8",
    "per_channel": True,
    "reduce_range": True,
    "calibrate_method": "Percentile",
    "CalibPercentile": 99.999,
    "op_types_to_quantize": ["MatMul"],
    "MatMulConstBOnly": True,
    "fp32_nodes": "the FFN: MatMuls whose constant weight is not square (up- and down-projections)",
}


def static_quantized_onnx(source: Path, source_key: str, calibration: CalibrationSet) -> tuple[Path, dict]:
    """The calibrated int8 version of `source`, cached under its key, the calibration set's identity, the
    settings and the quantizer's version. Details hold what it cost when it was built (also when cached)."""
    version = metadata.version("onnxruntime")
    key = artifact_key(source_key, calibration.identity(), "onnxruntime.quantization.quantize_static", version,
                       repr(sorted(SETTINGS.items())))
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx-int8-static", key, lambda out: _quantize(source, out, calibration))
    built = json.loads((folder / FACTS_FILE).read_text())
    details = {
        "int8_cached": cached, "int8_artifact_s": round(time.perf_counter() - started, 3),
        "quantizer": f"onnxruntime.quantization.quantize_static (onnxruntime {version})", "int8_settings": SETTINGS,
        "calibration": {**calibration.record(), "method": f"{SETTINGS['calibrate_method']} "
                                                          f"({SETTINGS['CalibPercentile']}th percentile)"},
        # seconds spent when the artifact was built: calibration_s is the calibration inputs running through
        # the model (first input read to the reader's end); quantize_s the whole quantize_static call
        "int8_cost": built,
        "onnx_path": str(folder / STATIC_FILE),
    }
    return folder / STATIC_FILE, details


def ffn_matmuls(model) -> list[str]:
    """MatMul nodes whose constant weight is not square: a BERT layer's FFN up- and down-projections (the
    attention projections map hidden to hidden)."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        shape = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if shape is not None and len(shape) == 2 and shape[0] != shape[1]:
            found.append(node.name)
    return found


def _quantize(source: Path, folder: Path, calibration: CalibrationSet) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    outline = onnx_outline(source)
    reader = _TimedReader(calibration.feeds([i.name for i in outline.graph.input]))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its pre-processing advice would land in the middle of our table
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # and so would the percentile calibrator's prints
            quantize_static(
                str(source), str(folder / STATIC_FILE), reader, quant_format=QuantFormat.QDQ,
                per_channel=SETTINGS["per_channel"], reduce_range=SETTINGS["reduce_range"],
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=SETTINGS["op_types_to_quantize"], nodes_to_exclude=ffn_matmuls(outline),
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"MatMulConstBOnly": SETTINGS["MatMulConstBOnly"],
                               "CalibPercentile": SETTINGS["CalibPercentile"]},
            )
    finally:
        root.setLevel(level)
    cost = {"calibration_s": round(reader.span_s(), 3), "quantize_s": round(time.perf_counter() - started, 3),
            "calibration_items": calibration.size}
    (folder / FACTS_FILE).write_text(json.dumps(cost))


class _TimedReader:
    """onnxruntime's CalibrationDataReader protocol over prepared feeds, timing the span they are read in."""

    def __init__(self, feeds: list[dict]):
        self._feeds = iter(feeds)
        self._first: float | None = None
        self._end: float | None = None

    def get_next(self):
        now = time.perf_counter()
        self._first = self._first if self._first is not None else now
        item = next(self._feeds, None)
        if item is None and self._end is None:
            self._end = now
        return item

    def span_s(self) -> float:
        return (self._end or 0.0) - (self._first or 0.0)
