"""PyTorch eager: the transformers model plus pooling, under inference mode. Also the fidelity reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.torch_decoder import load_torch_decoder, why_not_decoder
from enginebench.engines.torch_kernels import TorchKernels
from enginebench.engines.torch_readback import (TORCH_SOURCE, torch_executed_precision, torch_quantization,
                                              torch_threads, torch_weight_matmuls)
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch


@dataclass(frozen=True)
class TorchOptions(EngineOptions):
    attention: str = field(default="sdpa", metadata={"choices": ("sdpa", "eager")})  # transformers' attn_implementation
    interop_threads: int = field(default=1, metadata={"min": 1})


@dataclass(frozen=True)
class TorchEagerOptions(TorchOptions):
    # decoders in fp32: "stored" keeps 16-bit weights as stored and casts each for its call (engines/torch_upcast.py)
    fp32_weights: str = field(default="full", metadata={"choices": ("full", "stored")})


class TorchSession(Session):
    def __init__(self, module, torch, executed_precision: str = "fp32", details: dict | None = None):
        self.module = module
        self.torch = torch
        self.executed_precision = executed_precision
        self.details = {"attention": module.transformer.config._attn_implementation, **(details or {})}

    def prepare(self, batch: TokenBatch):
        return {name: self.torch.from_numpy(a) for name, a in batch.feeds(self.module.input_names).items()}

    def run(self, prepared) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(**prepared).float().numpy()


class TorchEngine(Engine):
    name = "torch"
    op_kernels = TorchKernels
    library = "torch"
    requires = ("torch", "transformers")
    extra = "torch"
    precisions = ("fp32", "bf16", "int8")
    formats = ("safetensors",)
    Options = TorchEagerOptions
    model_kinds = ("encoder", "decoder")
    library_precisions = ("fp16", "bf16", "int8", "fp8")
    parallelism = "tensor / pipeline parallel (torch.distributed), FSDP"
    training = "yes"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import torch

        found = ["cpu"]
        if torch.cuda.is_available():
            found.append("rocm" if torch.version.hip else "cuda")
        if hasattr(torch, "xpu") and torch.xpu.is_available():
            found.append("xpu")
        if torch.backends.mps.is_available():
            found.append("mps")
        return tuple(found)

    @classmethod
    def probe_backend(cls) -> str:
        import re

        import torch

        blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        parts = [f"BLAS {blas[1]}" if blas else "", "oneDNN" if torch.backends.mkldnn.is_available() else ""]
        return ", ".join(p for p in parts if p) or "ATen native kernels"

    @classmethod
    def why_not(cls, model: ModelSpec, precision: str, options: dict[str, str] | None = None) -> str | None:
        weights = (options or {}).get("fp32_weights", "full")
        if model.kind == "decoder":
            return why_not_decoder(model, precision, weights)
        if weights != "full":
            return f"torch fp32_weights={weights} is for decoders; {model.name} is an {model.kind}"
        return super().why_not(model, precision)

    @classmethod
    def reference_options(cls, model: ModelSpec) -> tuple[dict[str, str], str | None]:
        """A decoder whose float32 weights do not fit but whose checkpoint is 16-bit: its reference keeps the
        weights as stored (fp32_weights=stored: the same logits in half the memory)."""
        options, reason = super().reference_options(model)
        if reason and model.kind == "decoder":
            stored = {"fp32_weights": "stored"}
            other = cls.why_not(model, "fp32", stored)
            if other is None:
                return stored, None
            reason = f"{reason}; {other}"
        return options, reason

    def load(self, model: ModelSpec, precision: str, options: TorchEagerOptions) -> Session:
        import torch

        from enginebench.models.torch_encoder import load_sentence_encoder

        torch.set_num_threads(options.threads)
        try:
            torch.set_num_interop_threads(options.interop_threads)
        except RuntimeError:
            pass  # can only be set once per process, before any parallel work
        if model.kind == "decoder":
            return load_torch_decoder(model, precision, options)
        if options.fp32_weights != "full":
            raise ValueError(self.why_not(model, precision, {"fp32_weights": options.fp32_weights}))
        module = load_sentence_encoder(model.path, torch.float32, attention=options.attention)
        module, executed, details = reduce_precision(module, precision)
        return TorchSession(module, torch, executed, {**details, **torch_threads(torch)})


# Quantizing BERT's FFN Linear layers (dynamic int8, per-tensor or per-channel) cost MiniLM 0.97-0.98 min cosine
# vs fp32; the attention projections alone keep it at 0.995, so only those become int8.
INT8_LINEARS_MATCHING = ".attention."


def reduce_precision(module, precision: str):
    """(module, executed precision, details) for `precision`; the sentence embedding always comes back float32.

    The executed precision is read back from the module's layers after conversion, never echoed."""
    import warnings

    import torch

    if precision == "bf16":
        module = module.to(torch.bfloat16)
        return module, torch_executed_precision(module), {"executed_precision_source": TORCH_SOURCE}
    if precision != "int8":
        return module, torch_executed_precision(module), {"executed_precision_source": TORCH_SOURCE}
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    chosen = {name: per_channel_dynamic_qconfig for name, layer in module.named_modules()
              if isinstance(layer, torch.nn.Linear) and INT8_LINEARS_MATCHING in name}
    with warnings.catch_warnings():  # torch.ao quantization is deprecated for torchao, but still works in 2.13
        warnings.filterwarnings("ignore", message=".*(torch.ao.quantization|quantized tensor creation).*")
        quantized = quantize_dynamic(module, chosen, dtype=torch.qint8)
    layers, facts = torch_weight_matmuls(quantized)
    details = {"int8_linear_layers": sum(m.quantized for m in layers),
               "int8_scheme": "torch.ao dynamic qint8, per-channel weights",
               "int8_quantized_engine": torch.backends.quantized.engine, "int8_layers_matching": INT8_LINEARS_MATCHING,
               "quantization": torch_quantization(quantized, layers, facts),
               "executed_precision_source": TORCH_SOURCE}
    return quantized, torch_executed_precision(quantized, layers, facts), details
