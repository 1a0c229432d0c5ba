"""ONNX Runtime int8 quantization of the exported encoder (dynamic) and decoders (block-wise), cached as artifacts.

Settings (measured on all-MiniLM-L6-v2, 32 corpus sentences x 128 tokens, min cosine vs torch fp32):
  quantize_dynamic defaults (every MatMul/Gather/..., per-tensor)      0.922
  MatMul with constant weights only, per-channel                        0.989
  the same, FFN down-projections (weight K > N) left in fp32            0.996  <- used
The down-projection's input is the GELU output, whose outliers make a per-tensor uint8 activation scale coarse.
`-o onnxruntime.int8_layers=all` quantizes the down-projections too (the 0.989 row): every result measures its
own fidelity, and `tune`, which tries both, drops it below --min-fidelity.
What the file really holds (which MatMuls became MatMulInteger, their share of the weight-MatMul FLOPs) is read
back from the quantized graph when a session loads it (measure/quantization.py), not taken from these settings.

Decoders (quantized_decoder_onnx) take ONNX Runtime's block-wise 8-bit weights instead (MatMulNBits, bits 8,
blocks of 32 along the input, symmetric, accuracy_level 4: the activations are quantized to int8 per block of
32 at run time, so MLAS runs integer dot products). Measured on SmolLM2-135M, 2 x 64 corpus tokens, top-1
agreement with fp32 (perplexity 36.85 in fp32):
  quantize_dynamic as above, every weight MatMul (per-tensor uint8 activations)   0.55 (ppl 66.4)
  the same, down-projections left in fp32                                        0.88 (ppl 39.5)
  MatMulNBits 8-bit, blocks of 128, accuracy_level 4                              0.92 (ppl 37.0)
  MatMulNBits 8-bit, blocks of 32, accuracy_level 4                               0.97 (ppl 36.5)  <- used
  MatMulNBits 8-bit, blocks of 32, accuracy_level 0 (fp32 compute)                0.98, but ~14x slower per
                                                                                  token: MLAS dequantizes
                                                                                  the weights on every call
A decoder's activations carry outliers a single scale per tensor cannot hold (torch's dynamic int8 loses the
same way, engines/torch_decoder.py); a scale per block of 32 values can.
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
        "int8_cached": cached, "int8_quantize_s": round(time.perf_counter() - started, 3),
        "quantizer": f"onnxruntime.quantization.quantize_dynamic (onnxruntime {version})", "int8_settings": chosen,
        "onnx_path": str(folder / QUANTIZED_FILE),
    }
    return folder / QUANTIZED_FILE, details


DECODER_FILE = "decoder.int8.onnx"
DECODER_SETTINGS = {"op": "MatMulNBits", "bits": 8, "block_size": 32, "is_symmetric": True, "accuracy_level": 4,
                    "op_types_to_quantize": ["MatMul"]}


def quantized_decoder_onnx(source: Path, source_key: str) -> tuple[Path, dict]:
    """The int8 version of an exported decoder (cached under `source_key` + quantizer version + settings)."""
    version = metadata.version("onnxruntime")
    key = artifact_key(source_key, "onnxruntime.quantization.MatMulNBitsQuantizer", version,
                       repr(sorted(DECODER_SETTINGS.items())))
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx-decoder-int8", key,
                                     lambda out: _quantize_decoder(source, out / DECODER_FILE))
    details = {
        "int8_cached": cached, "int8_quantize_s": round(time.perf_counter() - started, 3),
        "quantizer": f"onnxruntime.quantization.MatMulNBitsQuantizer (onnxruntime {version})",
        "int8_settings": DECODER_SETTINGS, "onnx_path": str(folder / DECODER_FILE),
    }
    return folder / DECODER_FILE, details


def _quantize_decoder(source: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    s = DECODER_SETTINGS
    model = onnx.load(str(source))
    quantizer = MatMulNBitsQuantizer(model, bits=s["bits"], block_size=s["block_size"],
                                     is_symmetric=s["is_symmetric"], accuracy_level=s["accuracy_level"],
                                     op_types_to_quantize=tuple(s["op_types_to_quantize"]))
    with _quiet():
        quantizer.process()
    # past 2 GB a protobuf cannot hold the weights: they go to a file beside the graph
    quantizer.model.save_model_to_file(str(out), use_external_data_format=model.ByteSize() > 1_800_000_000)


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
