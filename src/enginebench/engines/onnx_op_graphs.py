"""Each operator as a one-node ONNX graph, which onnxruntime and openvino both load.

Standard ONNX operators only, at the opset that introduced them: Gemm for linear (transB=1: the weights are
output-major), LayerNormalization (opset 17), Gelu (opset 20), Attention (opset 23, on [1, H, S, D]).

int8 (onnxruntime): MatMulInteger, int32 out, plus an int32 Add for linear's bias. The activations go in as
uint8 with zero point 128 (the same integers): uint8 × int8 is the layout onnxruntime's quantizer writes and
MLAS's fast kernels take (int8 × int8 was seen ~15× slower); linear's weights as [K, N], MatMulInteger's B.
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


INT8_ZERO_POINT = 128  # uint8 activation = int8 value + 128


def int8_feeds(op_name: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """make_inputs' int8 arrays as the int8 graph takes them (activations shifted to uint8, weights [K, N])."""
    def shifted(a: np.ndarray) -> np.ndarray:
        return (a.astype(np.int16) + INT8_ZERO_POINT).astype(np.uint8)

    if op_name == "matmul":
        return {"a": shifted(arrays["a"]), "b": arrays["b"]}
    if op_name == "linear":
        return {"x": shifted(arrays["x"]), "w": np.ascontiguousarray(arrays["w"].T), "b": arrays["b"]}
    raise ValueError(f"{op_name} has no int8 graph")


def int8_model(op_name: str, feeds: dict[str, np.ndarray]) -> bytes:
    """MatMulInteger of int8_feeds' arrays (zero point 128 on the activations), + bias for linear; `out` int32."""
    from onnx import TensorProto, helper, numpy_helper

    types = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
             np.dtype(np.int32): TensorProto.INT32}
    inputs = [helper.make_tensor_value_info(name, types[a.dtype], list(a.shape)) for name, a in feeds.items()]
    zero_point = numpy_helper.from_array(np.array(INT8_ZERO_POINT, dtype=np.uint8), "zero_point")
    a, b = list(feeds)[:2]
    if op_name == "matmul":
        nodes = [helper.make_node("MatMulInteger", [a, b, "zero_point"], ["out"])]
    else:
        nodes = [helper.make_node("MatMulInteger", [a, b, "zero_point"], ["sums"]),
                 helper.make_node("Add", ["sums", "b"], ["out"])]
    graph = helper.make_graph(nodes, f"{op_name}_int8", inputs,
                              [helper.make_tensor_value_info("out", TensorProto.INT32, None)],
                              initializer=[zero_point])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    return model.SerializeToString()


__all__ = ["one_node_model", "graph_inputs", "graph_output", "node_type", "OPSET", "int8_feeds", "int8_model",
           "INT8_ZERO_POINT"]
