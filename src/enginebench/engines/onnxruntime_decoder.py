"""ONNX Runtime for Llama-family decoders: the built graph with its KV cache as inputs and outputs
(models/onnx_decoder_export.py), run step by step on the CPU execution provider.

prefill() feeds the prompt with empty past tensors; decode() feeds one token per sequence with the previous
call's `present.*` outputs as `past_key_values.*`. The cache stays in ONNX Runtime's OrtValues between calls
(run_with_ort_values): only the token ids go in and the kept logits come out as numpy arrays.

Precisions: fp32 and int8 (8-bit blocks, models/onnx_decoder_build.py), each built straight from the checkpoint.
What the session runs is read back from the graph file it loads (its weight MatMul node types), as for encoders.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.engines.onnxruntime_cpu import graph_readback, session_options, threads_readback
from enginebench.errors import UsageError
from enginebench.measure.memory import memory_shortfall
from enginebench.measure.quantization import onnx_outline
from enginebench.models.onnx_decoder_build import cache_names, unsupported_reason
from enginebench.models.onnx_decoder_export import onnx_decoder, read_signature
from enginebench.models.spec import ModelSpec

DECODER_PRECISIONS = ("fp32", "int8")
# bytes per parameter a session holds: the graph's weights (a session's peak was 1.07x its data file on SmolLM2;
# the build itself holds one tensor at a time). int8 blocks take 1.125 bytes, but the embedding table stays
# float32 (a fifth of a small model's parameters), hence 2.
_SESSION_BYTES_PER_PARAM = {"fp32": 4, "int8": 2}
_MEMORY_HEADROOM = 1.2  # activations, KV cache, allocator slack


def why_not_decoder(model: ModelSpec, precision: str) -> str | None:
    """A precision the decoder path does not offer, a model the graph builder cannot write, or one whose graph
    in `precision` would not fit in memory now."""
    if precision not in DECODER_PRECISIONS:
        return f"onnxruntime runs decoders in {', '.join(DECODER_PRECISIONS)}, not {precision}"
    if model.path and (Path(model.path) / "config.json").is_file():
        reason = unsupported_reason(json.loads((Path(model.path) / "config.json").read_text()))
        if reason:
            return f"onnxruntime cannot build a graph for {model.name}: {reason}"
    reason = memory_shortfall("onnxruntime", precision, model.name,
                              model.params * _SESSION_BYTES_PER_PARAM[precision] * _MEMORY_HEADROOM)
    if not reason:
        return None
    return f"{reason}: run it on a machine with more memory" + (" or in int8" if precision == "fp32" else "")


class OnnxRuntimeDecoderSession(DecoderSession):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "prefill": "InferenceSession.run_with_ort_values on the prompt with empty past tensors (made once per batch "
                   "size), logits of the last position only; OrtValue wrapping of the ids, the ids' range check "
                   "and the logits' copy to numpy inside",
        "decode": "InferenceSession.run_with_ort_values on one token per sequence with the previous call's present "
                  "OrtValues as the past (the graph concatenates the new key/value: one cache copy per step); "
                  "OrtValue wrapping of the ids and the logits' copy to numpy inside",
    }

    def __init__(self, session, signature: dict, precision: str, details: dict):
        from onnxruntime import OrtValue

        self.session = session
        self.OrtValue = OrtValue
        self.signature = signature
        self.vocab_size = int(signature["vocab"])
        self.max_positions = int(signature["max_positions"])
        self.past_names, present_names = cache_names(int(signature["layers"]))
        self.output_names = ["logits", *present_names]
        self.executed_precision = precision
        self.details = details
        self._empty: dict[int, dict] = {}
        self.past: dict | None = None
        self.position = self.batch = 0

    def reset(self) -> None:
        self.past = None
        self.position = 0

    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.checked_ids(tokens), dtype=np.int64)

    def _empty_past(self, batch: int) -> dict:
        """Zero-length past tensors for a fresh sequence, made once per batch size."""
        if batch not in self._empty:
            empty = np.zeros((batch, self.signature["kv_heads"], 0, self.signature["head_dim"]), dtype=np.float32)
            self._empty[batch] = {name: self.OrtValue.ortvalue_from_numpy(empty) for name in self.past_names}
        return self._empty[batch]

    def _run(self, tokens: np.ndarray, past: dict, positions: np.ndarray) -> tuple[np.ndarray, dict]:
        feeds = {"input_ids": self.OrtValue.ortvalue_from_numpy(tokens), **past,
                 "logits_positions": self.OrtValue.ortvalue_from_numpy(positions)}
        logits, *presents = self.session.run_with_ort_values(self.output_names, feeds)
        return logits.numpy(), dict(zip(self.past_names, presents))

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        tokens = self._check_tokens(tokens)
        n = tokens.shape[1]
        if n >= self.max_positions:
            raise ValueError(f"prompt of {n} tokens leaves no room in {self.max_positions} positions")
        logits, self.past = self._run(tokens, self._empty_past(tokens.shape[0]), np.array([n - 1], dtype=np.int64))
        self.position, self.batch = n, tokens.shape[0]
        return logits[:, 0]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        if self.past is None:
            raise RuntimeError("decode() before prefill(): there is no sequence to continue")
        tokens = self._check_tokens(tokens)
        if tokens.shape[0] != self.batch:
            raise ValueError(f"decode() got {tokens.shape[0]} sequences; the cache holds {self.batch} (prefill them)")
        if self.position >= self.max_positions:
            raise ValueError(f"the sequence reached the model's {self.max_positions} positions")
        logits, self.past = self._run(tokens, self.past, np.zeros(1, dtype=np.int64))
        self.position += tokens.shape[1]
        return logits[:, 0]

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        """Every position's logits of a fresh sequence (teacher forcing); the session's own sequence is kept."""
        tokens = self._check_tokens(tokens)
        positions = np.arange(tokens.shape[1], dtype=np.int64)
        return self._run(tokens, self._empty_past(tokens.shape[0]), positions)[0]

    def close(self) -> None:
        self.past = None
        self._empty = {}
        self.session = None


def matmul_weight_bytes(path) -> int:
    """Bytes of the constant inputs of the graph's MatMul and MatMulNBits nodes (weights, scales): what one decode
    step reads, for the bandwidth roofline. The embedding table is left out: a step gathers one row of it."""
    import onnx

    model = onnx_outline(path)
    itemsize = onnx.helper.tensor_dtype_to_np_dtype
    sizes = {i.name: len(i.raw_data) or itemsize(i.data_type).itemsize * int(np.prod(i.dims))
             for i in model.graph.initializer}
    used = {name for node in model.graph.node if node.op_type in ("MatMul", "MatMulNBits") for name in node.input[1:]}
    return sum(sizes[name] for name in used if name in sizes)


def load_onnxruntime_decoder(model: ModelSpec, precision: str, options) -> OnnxRuntimeDecoderSession:
    """The engine (engines/onnxruntime.py) dispatches decoders here; `options` are its OnnxRuntimeOptions."""
    import onnxruntime as ort

    reason = why_not_decoder(model, precision)
    if reason:
        raise UsageError(reason)
    if options.int8_layers != "no-ffn-down":
        raise UsageError("-o onnxruntime.int8_layers is for encoders: a decoder's int8 quantizes every weight MatMul "
                         "in blocks of 32")
    path, details = onnx_decoder(model, precision)
    signature = read_signature(path)
    executed, graph_details = graph_readback(path, precision)
    graph_details["weight_bytes"] = matmul_weight_bytes(path)
    session = ort.InferenceSession(str(path), session_options(options), providers=["CPUExecutionProvider"])
    details.update(graph_details, providers=session.get_providers(), **threads_readback(session),
                   kv_cache="float32 past_key_values in, present out (OrtValues kept in ONNX Runtime between calls)")
    return OnnxRuntimeDecoderSession(session, signature, executed, details)


__all__ = ["DECODER_PRECISIONS", "OnnxRuntimeDecoderSession", "why_not_decoder", "load_onnxruntime_decoder"]
