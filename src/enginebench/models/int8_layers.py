"""Which weight MatMuls an encoder's int8 precision quantizes: `-o <engine>.int8_layers=` of ONNX Runtime,
OpenVINO and torch-compile, one rule for all three. The default keeps the FFN down-projections (a wider input
mapped to a narrower output: BERT's FFN output dense) in fp32, where int8 activations lose the most fidelity;
`all` quantizes every weight MatMul. Each engine measures what its choice costs in fidelity, and `tune`
searches both."""

from __future__ import annotations

INT8_LAYERS = ("no-ffn-down", "all")
DEFAULT_INT8_LAYERS = "no-ffn-down"


def is_kept_fp32(in_features: int, out_features: int, int8_layers: str = DEFAULT_INT8_LAYERS) -> bool:
    """Whether a weight MatMul of this shape stays fp32 under `int8_layers`."""
    if int8_layers not in INT8_LAYERS:
        raise ValueError(f"int8_layers must be one of {', '.join(INT8_LAYERS)}, not {int8_layers!r}")
    return int8_layers != "all" and in_features > out_features


__all__ = ["INT8_LAYERS", "DEFAULT_INT8_LAYERS", "is_kept_fp32"]
