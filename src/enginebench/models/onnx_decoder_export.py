"""A Llama-family decoder as one ONNX graph per precision, with its KV cache as inputs and outputs, built once
(models/onnx_decoder_build.py, in its own process) and cached by model content.

One graph serves prefill and decode: the past length is a dynamic axis that may be 0 (a prefill feeds empty
past tensors), so ONNX Runtime loads and optimizes one graph, and decode steps feed the previous call's
`present.*` outputs back as `past_key_values.*` without leaving ONNX Runtime (OrtValues, no numpy copies).
Two graphs (a prefill without past inputs and a decode with them) would hold every weight twice in memory;
the only thing a separate prefill graph saves is concatenating an empty past, which costs nothing.

Graph signature (L layers, K key/value heads, D head size):
  inputs   input_ids [batch, tokens] int64
           past_key_values.{i}.key / .value [batch, K, past, D] float32, i < L (past may be 0)
           logits_positions [kept] int64: which of this call's positions get logits (the last one for a
           prefill or a decode step, every one for a teacher-forced forward): the vocabulary projection
           runs on those rows only, as transformers' logits_to_keep does
  outputs  logits [batch, kept, vocab] float32
           present.{i}.key / .value [batch, K, past + tokens, D] float32

Positions come from the past length (rotary angles of past .. past + tokens - 1) and attention is causal over
past + tokens keys; there is no padding mask, so every row of a batch has the same length (as every workload
here gives them). Each call concatenates the new keys and values to the past (a copy of the cache per step, as
Hugging Face's own ONNX decoders do; ONNX Runtime's GroupQueryAttention would update a preallocated buffer in
place, at the price of graphs whose cache works unlike every other engine's here).

fp32 holds the weights as float32 MatMuls; int8 is built quantized (see onnx_decoder_build.INT8), never from a
float32 graph, so no copy of the model in float32 is ever made: an int8 7B builds in a few GiB.
"""

from __future__ import annotations

import json
import time
from importlib import metadata
from pathlib import Path

from enginebench.models.artifacts import artifact_key, cached_artifact, convert_in_subprocess
from enginebench.models.onnx_decoder_build import INT8, ONNX_FILE, OPSET, SIGNATURE_FILE
from enginebench.models.spec import ModelSpec

FORMAT_VERSION = "2"  # bump when the built graph changes (inputs, outputs, opset, nodes); 1 was a torch trace


def onnx_decoder(model: ModelSpec, precision: str) -> tuple[Path, dict]:
    """Path of the built decoder.onnx in `precision` (fp32 or int8) and facts about the build."""
    key = onnx_decoder_key(model, precision)
    started = time.perf_counter()
    folder, cached = cached_artifact(f"onnx-decoder-{precision}", key, lambda out: convert_in_subprocess(
        "enginebench.models.onnx_decoder_build", model.path, str(out), precision, what="ONNX decoder build"))
    details = {
        "onnx_cached": cached, "onnx_export_s": round(time.perf_counter() - started, 3),
        "exporter": f"enginebench's graph builder (onnx {metadata.version('onnx')}, opset {OPSET}) from the "
                    "safetensors, one weight at a time; KV cache as inputs/outputs",
        "onnx_path": str(folder / ONNX_FILE),
    }
    if precision == "int8":
        details.update(quantizer="onnxruntime.quantization DefaultWeightOnlyQuantizer, as MatMulNBitsQuantizer "
                                 f"(onnxruntime {metadata.version('onnxruntime')})", int8_settings=INT8)
    return folder / ONNX_FILE, details


def onnx_decoder_key(model: ModelSpec, precision: str) -> str:
    versions = [metadata.version("onnx"), metadata.version("transformers")]  # transformers: the rotary tables
    if precision == "int8":
        versions.append(metadata.version("onnxruntime"))  # its quantizer writes the int8 blocks
    return artifact_key(model.content_hash, "decoder", precision, *versions, str(OPSET), FORMAT_VERSION)


def read_signature(onnx_file: Path) -> dict:
    return json.loads((Path(onnx_file).parent / SIGNATURE_FILE).read_text())

