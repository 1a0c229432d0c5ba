"""ONNX Runtime on the CPU execution provider, from the cached ONNX export.

int8: dynamic quantization (models/onnx_quantize.py). int8-static: QDQ with calibrated activation scales
(models/onnx_static_quantize.py); what it runs is read from the graph the session itself optimized, since a
QDQ MatMul that ONNX Runtime does not fuse into an integer op (graph_optimization basic or disable) is an fp32
MatMul on dequantized values.

Decoders (Llama-family causal LMs) run through engines/onnxruntime_decoder.py: a graph exported with its KV
cache as inputs and outputs, in fp32 or int8.
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterable

import numpy as np

from enginebench.engines.base import Engine, Session
from enginebench.engines.onnxruntime_cpu import (OnnxRuntimeOptions, graph_readback, session_options,
                                               threads_readback)
from enginebench.engines.onnxruntime_decoder import load_onnxruntime_decoder, why_not_decoder
from enginebench.engines.onnxruntime_kernels import OnnxRuntimeKernels
from enginebench.measure.cpu_features import current as current_cpu, vnni_available
from enginebench.measure.quantization import (onnx_executed_precision, onnx_outline, onnx_quantization,
                                              onnx_weight_matmuls)
from enginebench.models import onnx_quantize
from enginebench.models.artifacts import artifact_key
from enginebench.models.onnx_export import onnx_encoder, onnx_key
from enginebench.models.onnx_static_quantize import static_quantized_onnx
from enginebench.models.spec import ModelSpec
from enginebench.workloads import WorkloadData
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.calibration import calibration_set


class OnnxRuntimeSession(Session):
    def __init__(self, session, details: dict, executed_precision: str = "fp32"):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.executed_precision = executed_precision
        self.details = details

    def prepare(self, batch: TokenBatch):
        return batch.feeds(self.input_names)

    def run(self, prepared) -> np.ndarray:
        return self.session.run(None, prepared)[0]


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    op_kernels = OnnxRuntimeKernels
    prepares = "writes the model as an ONNX graph"
    library = "onnxruntime"
    requires = ("onnxruntime", "onnx", "torch", "transformers")  # torch exports the ONNX file
    extra = "onnxruntime"
    precisions = ("fp32", "int8", "int8-static")
    formats = ("onnx",)
    Options = OnnxRuntimeOptions
    library_precisions = ("fp16", "int8", "int4")  # fp16 graphs, QDQ/dynamic int8, MatMulNBits int4
    backend = "MLAS (its own CPU kernels); execution providers for GPUs"
    parallelism = "no (one device per session)"
    training = "onnxruntime-training package, not this one"
    cuts_graph = True
    model_kinds = ("encoder", "decoder")

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import onnxruntime as ort

        providers = ort.get_available_providers()
        found = ["cpu"]
        if "CUDAExecutionProvider" in providers:
            found.append("cuda")
        if "ROCMExecutionProvider" in providers:
            found.append("rocm")
        return tuple(found)

    def load(self, model: ModelSpec, precision: str, options: OnnxRuntimeOptions,
             measured: Iterable[WorkloadData] | None = None) -> Session:
        """`measured`: the workloads the session will be measured on, which int8-static's calibration
        inputs are kept apart from (None: the default corpus workload is assumed, and recorded as assumed)."""
        import onnxruntime as ort

        if model.kind == "decoder":
            return load_onnxruntime_decoder(model, precision, options)
        path, details = onnx_encoder(model)
        if precision == "int8":
            path, details = _int8_model(model, path, details, options.int8_layers)
        if precision == "int8-static":
            path, details = _int8_static_model(model, path, details, measured)
            return _static_session(path, details, options)
        executed, graph_details = graph_readback(path, precision)
        session = ort.InferenceSession(str(path), session_options(options), providers=["CPUExecutionProvider"])
        details.update(graph_details, providers=session.get_providers(), **threads_readback(session))
        return OnnxRuntimeSession(session, details, executed)

    @classmethod
    def why_not(cls, model: ModelSpec, precision: str, options: dict[str, str] | None = None) -> str | None:
        if model.kind == "decoder":
            return why_not_decoder(model, precision) or cls.why_not_model(model)
        return super().why_not(model, precision)

    @classmethod
    def why_not_precision(cls, precision: str) -> str | None:
        if precision == "fp16":
            return ("ONNX Runtime's CPU provider has no fp16 MatMul kernels on x86: a float16 graph runs with Casts "
                    "to float32 inserted around every MatMul, so it would time fp32 compute plus casts, not fp16")
        return super().why_not_precision(precision)

    def load_onnx_graph(self, path, options: OnnxRuntimeOptions):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), session_options(options), providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)


def _int8_model(model: ModelSpec, path, details: dict, int8_layers: str):
    """The dynamically quantized graph (cached) and the quantizer's facts."""
    qpath, qdetails = onnx_quantize.quantized_onnx(path, artifact_key(onnx_key(model), model.until or ""), int8_layers)
    return qpath, {**details, **qdetails}


def _int8_static_model(model: ModelSpec, path, details: dict, measured):
    """The calibrated QDQ graph (cached under its calibration set) and what it cost."""
    calibration = calibration_set(model.path, measured)
    qpath, qdetails = static_quantized_onnx(path, artifact_key(onnx_key(model), model.until or ""), calibration)
    return qpath, {**details, **qdetails}


def _static_session(path, details: dict, options: OnnxRuntimeOptions) -> OnnxRuntimeSession:
    """A session on the QDQ graph, described from the graph it optimized for itself (written out once at
    session creation, read, deleted): int8-static only where its weight MatMuls became integer ops."""
    import onnxruntime as ort

    so = session_options(options)
    so.log_severity_level = 3  # serializing an ALL-level graph warns that it may hold CPU-specific ops
    with tempfile.TemporaryDirectory(prefix="enginebench-ort-") as folder:
        so.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        optimized = onnx_outline(so.optimized_model_filepath)
    layers, facts = onnx_weight_matmuls(optimized, qdq_runs_float=True)
    quantization = onnx_quantization(optimized, f"ONNX Runtime's optimized graph of {path} (what the session runs)",
                                     qdq_runs_float=True)
    static = any(how == "static" for how, _ in facts["activations"])
    executed = "int8-static" if static else onnx_executed_precision(layers, facts)
    int8_gemm = _mlas_int8_path(path)
    if static:
        low, high = int8_gemm["weight_range"]
        quantization["scheme"] += f", weights within [{low}, {high}] (reduce_range)"
    details.update({
        "executed_precision_source": "weight MatMul node types of the graph the session optimized for itself",
        "int8_matmuls": sum(m.quantized for m in layers), "quantization": quantization,
        "int8_gemm": int8_gemm, "providers": session.get_providers(), **threads_readback(session),
    })
    return OnnxRuntimeSession(session, details, executed)


def _mlas_int8_path(path) -> dict:
    """What decides MLAS's u8s8 sums here: VNNI (exact int32 sums) or not (int16 byte-pair sums, which 7-bit
    weights keep from saturating); the weights' integer range read from the quantized file. MLAS reads the CPU
    itself: under a narrowed ENGINEBENCH_CPU_FEATURES it sees the smaller CPU only through the CPUID mask."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    lowest, highest = 0, 0
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8 and len(init.dims) == 2:
            values = numpy_helper.to_array(init)
            lowest, highest = min(lowest, int(values.min())), max(highest, int(values.max()))
    return {"library": "MLAS", "u8s8": True, "vnni": vnni_available(set(current_cpu().seen_by_libraries)), "weight_range": [lowest, highest],
            "saturation_free": max(-lowest, highest) * 255 * 2 <= 32767}
