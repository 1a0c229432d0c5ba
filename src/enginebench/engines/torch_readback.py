"""What a torch module really runs, read back from it: its threads, its weight MatMuls (float or torch.ao
quantized Linear layers), the precision they compute in and the quantization record. Shared by the torch
engines (eager, compiled, the decoder, sentence-transformers)."""

from __future__ import annotations

from enginebench.measure.quantization import WeightMatmul, dtype_precision, quantization_record, weights_precision

TORCH_SOURCE = "the module's layers after conversion (quantized Linear modules, else the Linear weights' dtype)"


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
            # a Linear that casts its stored weight for each call (engines/torch_upcast.py) says what it computes in
            facts["float_weights"][dtype_precision(getattr(layer, "compute_dtype", layer.weight.dtype))] += 1
    return layers, facts


def torch_executed_precision(module, layers=None, facts=None) -> str:
    """What the module really computes its weight MatMuls in, read from its layers: int8 when quantized Linear
    layers are present, else the Linear weights' dtype (the parameters' dtype when it has no Linear)."""
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


__all__ = ["TORCH_SOURCE", "torch_threads", "torch_weight_matmuls", "torch_executed_precision", "torch_quantization"]
