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
    def __init__(self, session, details: dict):
        self.session = session
        self.input_names = [i.name for i in session.get_inputs()]
        self.executed_precision = "fp32"
        self.details = details

    def prepare(self, batch: TokenBatch):
        arrays = batch.as_dict()
        return {name: arrays[name] for name in self.input_names}

    def run(self, prepared) -> np.ndarray:
        return self.session.run(None, prepared)[0]


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"
    library = "onnxruntime"
    requires = ("onnxruntime", "onnx", "torch", "transformers")  # torch exports the ONNX file
    extra = "onnxruntime"
    precisions = ("fp32",)
    formats = ("onnx",)
    Options = OnnxRuntimeOptions

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

        if options.graph_optimization not in _OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {', '.join(_OPT_LEVELS)}")
        path, details = onnx_encoder(model)
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
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        details["providers"] = session.get_providers()
        return OnnxRuntimeSession(session, details)
