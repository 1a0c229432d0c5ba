"""ONNX Runtime on the CPU execution provider, from the cached ONNX export."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    graph_optimization: str = "all"  # disable, basic, extended or all
    inter_op_threads: int = 1


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
    library = "onnxruntime"
    requires = ("onnxruntime", "onnx", "torch", "transformers")  # torch exports the ONNX file
    extra = "onnxruntime"
    precisions = ("fp32", "int8")
    formats = ("onnx",)
    Options = OnnxRuntimeOptions
    library_precisions = ("fp16", "int8", "int4")  # fp16 graphs, QDQ/dynamic int8, MatMulNBits int4
    backend = "MLAS (its own CPU kernels); execution providers for GPUs"
    parallelism = "no (one device per session)"
    training = "onnxruntime-training package, not this one"
    cuts_graph = True

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

    def load(self, model: ModelSpec, precision: str, options: OnnxRuntimeOptions) -> Session:
        import onnxruntime as ort

        from enginebench.models.onnx_export import onnx_encoder

        path, details = onnx_encoder(model)
        executed = "fp32"
        if precision == "int8":
            path, details, executed = _int8_model(model, path, details)
        session = ort.InferenceSession(str(path), _session_options(options), providers=["CPUExecutionProvider"])
        details["providers"] = session.get_providers()
        return OnnxRuntimeSession(session, details, executed)

    @classmethod
    def unsupported_reason(cls, precision: str) -> str | None:
        if precision == "fp16":
            return ("ONNX Runtime's CPU provider has no fp16 MatMul kernels on x86: a float16 graph runs with Casts "
                    "to float32 inserted around every MatMul, so it would time fp32 compute plus casts, not fp16")
        return super().unsupported_reason(precision)

    def load_onnx_graph(self, path, options: OnnxRuntimeOptions):
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), _session_options(options), providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)


def _int8_model(model: ModelSpec, path, details: dict):
    """The dynamically quantized graph; executed precision int8 only if integer MatMuls are really in it."""
    import onnx

    from enginebench.models.artifacts import artifact_key
    from enginebench.models.onnx_export import onnx_key
    from enginebench.models.onnx_quantize import quantized_onnx

    qpath, qdetails = quantized_onnx(path, artifact_key(onnx_key(model), model.until or ""))
    graph = onnx.load(str(qpath), load_external_data=False).graph
    integer_ops = sum(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in graph.node)
    details = {**details, **qdetails, "int8_matmuls": integer_ops}
    return qpath, details, "int8" if integer_ops else "fp32"


def _session_options(options: OnnxRuntimeOptions):
    import onnxruntime as ort

    if options.graph_optimization not in _OPT_LEVELS:
        raise ValueError(f"graph_optimization must be one of {', '.join(_OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = options.inter_op_threads
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[options.graph_optimization]
    return so
