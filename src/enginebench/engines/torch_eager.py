"""PyTorch eager: the transformers model plus pooling, under inference mode. Also the fidelity reference."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch


@dataclass(frozen=True)
class TorchOptions(EngineOptions):
    attention: str = field(default="sdpa", metadata={"choices": ("sdpa", "eager")})  # transformers' attn_implementation
    interop_threads: int = field(default=1, metadata={"min": 1})


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
    library = "torch"
    requires = ("torch", "transformers")
    extra = "torch"
    precisions = ("fp32", "bf16", "int8")
    formats = ("safetensors",)
    Options = TorchOptions
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
    def unsupported_for(cls, model: ModelSpec, precision: str) -> str | None:
        if model.kind == "decoder":
            from enginebench.engines.torch_decoder import decoder_unsupported_reason

            return decoder_unsupported_reason(model, precision)
        return super().unsupported_for(model, precision)

    def load(self, model: ModelSpec, precision: str, options: TorchOptions) -> Session:
        import torch

        from enginebench.models.torch_encoder import load_sentence_encoder

        torch.set_num_threads(options.threads)
        try:
            torch.set_num_interop_threads(options.interop_threads)
        except RuntimeError:
            pass  # can only be set once per process, before any parallel work
        if model.kind == "decoder":
            from enginebench.engines.torch_decoder import load_torch_decoder

            return load_torch_decoder(model, precision, options)
        module = load_sentence_encoder(model.path, torch.float32, attention=options.attention)
        module, executed, details = reduce_precision(module, precision)
        return TorchSession(module, torch, executed, {**details, **torch_threads(torch)})


# Quantizing BERT's FFN Linear layers (dynamic int8, per-tensor or per-channel) cost MiniLM 0.97-0.98 min cosine
# vs fp32; the attention projections alone keep it at 0.995, so only those become int8.
INT8_LAYERS = ".attention."


def torch_threads(torch) -> dict:
    """The threads torch really uses, read back from it (intra-op pool and inter-op pool)."""
    return {"threads_used": torch.get_num_threads(), "threads_source": "torch.get_num_threads()",
            "interop_threads_used": torch.get_num_interop_threads()}


def torch_weight_matmuls(module):
    """(WeightMatmul list, facts) of a torch module tree: nn.Linear layers (float) and torch.ao quantized
    Linear layers (dynamic or static), as they are after quantization. Facts: Counters of the weight dtypes,
    weight qschemes and activation handling of the quantized layers, and the float layers' weight dtypes."""
    from collections import Counter

    import torch
    from torch.ao.nn.quantized import Linear as QuantizedLinear
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    from enginebench.measure.quantization import WeightMatmul, dtype_precision

    layers, facts = [], {key: Counter() for key in ("weights", "weight_granularity", "activations", "float_weights")}
    for name, layer in module.named_modules():
        if isinstance(layer, QuantizedLinear):
            weight = layer.weight()
            quantized = weight.dtype in (torch.qint8, torch.quint8)
            layers.append(WeightMatmul(name, layer.in_features, layer.out_features, quantized))
            if quantized:
                facts["weights"]["int8"] += 1
                per_channel = weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
                facts["weight_granularity"]["per-channel" if per_channel else "per-tensor"] += 1
                facts["activations"]["dynamic" if isinstance(layer, DynamicQuantizedLinear) else "static"] += 1
            else:  # a dynamic Linear holding fp16 weights
                facts["float_weights"][dtype_precision(weight.dtype)] += 1
        elif isinstance(layer, torch.nn.Linear):
            layers.append(WeightMatmul(name, layer.in_features, layer.out_features, False))
            facts["float_weights"][dtype_precision(layer.weight.dtype)] += 1
    return layers, facts


def torch_executed_precision(module, layers=None, facts=None) -> str:
    """What the module really computes its weight MatMuls in, read from its layers: int8 when quantized Linear
    layers are present, else the Linear weights' dtype (the parameters' dtype when it has no Linear)."""
    from enginebench.measure.quantization import dtype_precision, weights_precision

    if layers is None:
        layers, facts = torch_weight_matmuls(module)
    if any(m.quantized for m in layers):
        return "int8"
    if facts["float_weights"]:
        return weights_precision(facts["float_weights"])
    first = next(module.parameters(), None)
    return dtype_precision(first.dtype) if first is not None else "fp32"


def torch_quantization(module, layers=None, facts=None) -> dict:
    """`details["quantization"]` of a torch module tree, walked after quantization."""
    import torch

    from enginebench.measure.quantization import quantization_record

    if layers is None:
        layers, facts = torch_weight_matmuls(module)
    source = (f"torch module tree after quantization (torch.ao quantized Linear vs nn.Linear; "
              f"quantized engine {torch.backends.quantized.engine})")
    if not any(m.quantized for m in layers):
        return quantization_record("none: no Linear layer is quantized", "fp32", "fp32", layers, source)
    granularity = facts["weight_granularity"].most_common(1)[0][0]
    if facts["activations"].most_common(1)[0][0] == "dynamic":
        scheme = f"dynamic w8a8 ({granularity} int8 weights, per-tensor dynamic uint8 activations)"
    else:
        scheme = f"static w8a8 ({granularity} int8 weights, static uint8 activations)"
    return quantization_record(scheme, "int8", "uint8", layers, source)


def reduce_precision(module, precision: str):
    """(module, executed precision, details) for `precision`; the sentence embedding always comes back float32.

    The executed precision is read back from the module's layers after conversion, never echoed."""
    import warnings

    import torch

    if precision == "bf16":
        module = module.to(torch.bfloat16)
        return module, torch_executed_precision(module), {"executed_precision_source": _TORCH_SOURCE}
    if precision != "int8":
        return module, torch_executed_precision(module), {"executed_precision_source": _TORCH_SOURCE}
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    chosen = {name: per_channel_dynamic_qconfig for name, layer in module.named_modules()
              if isinstance(layer, torch.nn.Linear) and INT8_LAYERS in name}
    with warnings.catch_warnings():  # torch.ao quantization is deprecated for torchao, but still works in 2.13
        warnings.filterwarnings("ignore", message=".*(torch.ao.quantization|quantized tensor creation).*")
        quantized = quantize_dynamic(module, chosen, dtype=torch.qint8)
    layers, facts = torch_weight_matmuls(quantized)
    details = {"int8_linear_layers": sum(m.quantized for m in layers),
               "int8_scheme": "torch.ao dynamic qint8, per-channel weights",
               "int8_quantized_engine": torch.backends.quantized.engine, "int8_layers_matching": INT8_LAYERS,
               "quantization": torch_quantization(quantized, layers, facts),
               "executed_precision_source": _TORCH_SOURCE}
    return quantized, torch_executed_precision(quantized, layers, facts), details


_TORCH_SOURCE = "the module's layers after conversion (quantized Linear modules, else the Linear weights' dtype)"
