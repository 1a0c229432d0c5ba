"""What the ONNX Runtime engines share, encoder and decoder alike: the options, the CPU session built from them,
and what is read back from a session and the graph it loads (threads, executed precision, quantization)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from enginebench.engines.base import EngineOptions
from enginebench.measure.quantization import (onnx_executed_precision, onnx_outline, onnx_quantization,
                                              onnx_weight_matmuls)
from enginebench.models.int8_layers import DEFAULT_INT8_LAYERS, INT8_LAYERS

OPT_LEVELS = ("disable", "basic", "extended", "all")
SPINNING = "session.intra_op.allow_spinning"


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    graph_optimization: str = field(default="all", metadata={"choices": OPT_LEVELS})
    inter_op_threads: int = field(default=1, metadata={"min": 1})
    # encoders' int8 only: which weight MatMuls run int8 (models/onnx_quantize.py); tune tries both
    int8_layers: str = field(default=DEFAULT_INT8_LAYERS, metadata={"choices": INT8_LAYERS, "tune": True,
                                                              "precisions": ("int8",)})


def graph_readback(path, precision: str) -> tuple[str, dict]:
    """(executed precision, details) from the graph file the session loads: int8 only if its weight MatMuls
    really are integer ops (MatMulInteger, ...); for int8 also what was quantized (details["quantization"])."""
    outline = onnx_outline(path)
    layers, facts = onnx_weight_matmuls(outline)
    details = {"executed_precision_source": "weight MatMul node types of the ONNX graph the session loads",
               "int8_matmuls": sum(m.quantized for m in layers)}
    if precision == "int8":
        details["quantization"] = onnx_quantization(outline, f"ONNX graph walk of {path}")
    return onnx_executed_precision(layers, facts), details


def threads_readback(session) -> dict:
    """The intra-op threads the session was built with, read back from its own options (0: ORT's default, one
    per physical core), and whether they spin while they wait for work."""
    so = session.get_session_options()
    used = so.intra_op_num_threads
    out = {"threads_used": used, "threads_source": "InferenceSession.get_session_options().intra_op_num_threads"}
    if not used:
        out["threads_note"] = "ONNX Runtime's default: one thread per physical core"
    try:
        out["threads_spin"] = so.get_session_config_entry(SPINNING) != "0"
    except RuntimeError:  # never set: ONNX Runtime's default, spinning
        out["threads_spin"] = True
    return out


def follow_wait_policy(so) -> None:
    """OMP_WAIT_POLICY=PASSIVE: threads that wait for work sleep instead of spinning. OpenMP reads it itself (torch,
    oneDNN, CTranslate2, llama.cpp's ggml); ONNX Runtime's own thread pool does not, so its sessions are asked the
    same here: one setting for every engine of a run. Spinning wins a little latency on idle cores and burns a
    busy machine's CPU (two sessions sharing two cores: 30% of their CPU time)."""
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        so.add_session_config_entry(SPINNING, "0")


def session_options(options: OnnxRuntimeOptions):
    import onnxruntime as ort

    if options.graph_optimization not in OPT_LEVELS:
        raise ValueError(f"graph_optimization must be one of {', '.join(OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    follow_wait_policy(so)
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.graph_optimization]
    return so


__all__ = ["OPT_LEVELS", "SPINNING", "OnnxRuntimeOptions", "graph_readback", "threads_readback", "follow_wait_policy",
           "session_options"]
