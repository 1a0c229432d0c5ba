"""What OpenVINO's CPU plugin really runs, for every part that times it (its engine, its single-operator kernels,
the GEMM ceilings): the precision and kernel of a compiled model's matrix products, read from its runtime graph,
and the int8 operand its low-precision transformations fold into an integer product."""

from __future__ import annotations

import numpy as np

PRODUCT_LAYERS = ("MatMul", "FullyConnected")  # the runtime graph's names for a matrix product
INTEGER = ("i8", "u8")
# without one of these the plugin runs bf16 as f32 and says nothing; it reads the CPU itself, so under a narrowed
# ENGINEBENCH_CPU_FEATURES set it would pick bf16 kernels that the capped oneDNN does not have
CPU_NEEDS = {"bf16": frozenset({"avx512_bf16", "amx_bf16"})}


def node_runs(info) -> tuple[str, str]:
    """(runtime precision, kernel) of a runtime node from its rt_info: ("u8", "brgemm_avx512_amx"), ..."""
    return info["runtimePrecision"].astype(str), info["primitiveType"].astype(str)


def is_product(info) -> bool:
    return "layerType" in info and info["layerType"].astype(str) in PRODUCT_LAYERS


def product_runs(compiled) -> tuple[str, str] | None:
    """(runtime precision, kernel) of the first matrix product in a compiled model's runtime graph, or None."""
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if is_product(info):
            return node_runs(info)
    return None


def int8_operand(value):
    """An int8 (or int8-valued) node as the low-precision transformations want it: Convert to f32, then a
    FakeQuantize of 256 levels over -128..127, the identity on these integers, which they fold into an int8
    product whose int32 sums come out dequantized at scale 1."""
    import openvino as ov
    from openvino import opset13 as ops

    lo, hi = np.float32(-128), np.float32(127)
    return ops.fake_quantize(ops.convert(value, ov.Type.f32), lo, hi, lo, hi, 256)


__all__ = ["PRODUCT_LAYERS", "INTEGER", "CPU_NEEDS", "node_runs", "is_product", "product_runs", "int8_operand"]
