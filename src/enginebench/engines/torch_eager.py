"""PyTorch eager: the transformers model plus pooling, under inference mode. Also the fidelity reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch


@dataclass(frozen=True)
class TorchOptions(EngineOptions):
    attention: str = "sdpa"  # transformers attention implementation: sdpa or eager
    interop_threads: int = 1


class TorchSession(Session):
    def __init__(self, module, torch):
        self.module = module
        self.torch = torch
        self.executed_precision = "fp32"
        self.details = {"attention": module.transformer.config._attn_implementation}

    def prepare(self, batch: TokenBatch):
        arrays = batch.as_dict()
        return {name: self.torch.from_numpy(arrays[name]) for name in self.module.input_names}

    def run(self, prepared) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(**prepared).numpy()


class TorchEngine(Engine):
    name = "torch"
    library = "torch"
    requires = ("torch", "transformers")
    extra = "torch"
    precisions = ("fp32",)
    formats = ("safetensors",)
    Options = TorchOptions

    def load(self, model: ModelSpec, precision: str, options: TorchOptions) -> Session:
        import torch

        from enginebench.models.torch_encoder import load_sentence_encoder

        torch.set_num_threads(options.threads)
        try:
            torch.set_num_interop_threads(options.interop_threads)
        except RuntimeError:
            pass  # can only be set once per process, before any parallel work
        module = load_sentence_encoder(model.path, torch.float32, attention=options.attention)
        return TorchSession(module, torch)
