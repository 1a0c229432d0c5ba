"""Each operator as a one-node ONNX graph, which onnxruntime and openvino both load.

Standard ONNX operators only, at the opset that introduced them: Gemm for linear (transB=1: the weights are
output-major), LayerNormalization (opset 17), Gelu (opset 20), Attention (opset 23, on [1, H, S, D]).
"""

from __future__ import annotations

import math

import numpy as np

OPSET = 23  # Attention's; the other nodes keep their meaning at this opset

_NODES = {  # operator -> (ONNX op type, attributes)
    "matmul": ("MatMul", {}),
    "linear": ("Gemm", {"transB": 1}),
    "softmax": ("Softmax", {"axis": -1}),
    "layernorm": ("LayerNormalization", {"axis": -1, "epsilon": 1e-5}),
    "gelu": ("Gelu", {}),
    "attention": ("Attention", {}),
    "add": ("Add", {}),
    "sum": ("ReduceSum", {"keepdims": 0}),
}


def node_type(op_name: str) -> str:
    return _NODES[op_name][0]


def graph_inputs(op_name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays as the graph takes them: attention's [H, S, D] as [1, H, S, D]; the sum's axis as an input."""
    if op_name == "attention":
        return {k: v[None] for k, v in arrays.items()}
    if op_name == "sum":
        return {**arrays, "axes": np.array([-1], dtype=np.int64)}
    return dict(arrays)


def graph_output(op_name: str, out: np.ndarray) -> np.ndarray:
    return out[0] if op_name == "attention" else out


def one_node_model(op_name: str, feeds: dict[str, np.ndarray], elem_type: int | None = None) -> bytes:
    """The serialized model: one node whose inputs are `feeds` (as graph_inputs gives them), output `out`."""
    from onnx import TensorProto, helper

    elem_type = TensorProto.FLOAT if elem_type is None else elem_type
    op_type, attrs = _NODES[op_name]
    if op_name == "attention":
        attrs = {"scale": 1 / math.sqrt(feeds["q"].shape[-1])}  # the default, written down
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64 if a.dtype == np.int64 else elem_type,
                                            list(a.shape)) for name, a in feeds.items()]
    node = helper.make_node(op_type, list(feeds), ["out"], **attrs)
    graph = helper.make_graph([node], op_name, inputs, [helper.make_tensor_value_info("out", elem_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10  # what onnxruntime and openvino both read
    return model.SerializeToString()


__all__ = ["one_node_model", "graph_inputs", "graph_output", "node_type", "OPSET"]
