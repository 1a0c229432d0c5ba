"""ONNX Runtime's single-operator kernels (`enginebench ops`): each operator as a one-node ONNX graph on the CPU
provider; int8 as MatMulInteger (MLAS u8×s8→s32)."""

from __future__ import annotations

import math

import numpy as np

from enginebench.engines import onnx_op_graphs
from enginebench.engines.kernels import Kernels, Prepared, Unsupported
from enginebench.engines.onnxruntime_cpu import follow_wait_policy


class OnnxRuntimeKernels(Kernels):
    requires = ("onnxruntime", "onnx")

    def setup(self, threads):
        self.threads = threads
        self.threads_info = {"threads": threads, "threads_control": "SessionOptions.intra_op_num_threads"}

    def prepare(self, op, arrays, precision):
        import onnxruntime as ort
        from onnx import TensorProto

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        follow_wait_policy(opts)
        if precision == "int8":
            feeds = onnx_op_graphs.int8_feeds(op, arrays)
            session = ort.InferenceSession(onnx_op_graphs.int8_model(op, feeds), opts,
                                           providers=["CPUExecutionProvider"])
            note = (f"ONNX MatMulInteger, uint8 (zero point {onnx_op_graphs.INT8_ZERO_POINT}) × int8 → int32"
                    + (", + Add" if op == "linear" else ""))
            return Prepared(lambda f: session.run(None, f), feeds, lambda out: out[0], 1, note)
        feeds = onnx_op_graphs.graph_inputs(op, arrays)
        elem = TensorProto.FLOAT if precision == "fp32" else TensorProto.BFLOAT16
        try:
            session = ort.InferenceSession(onnx_op_graphs.one_node_model(op, feeds, elem), opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:
            if precision != "fp32" and "NOT_IMPLEMENTED" in str(e):
                raise Unsupported(f"onnxruntime's CPU provider has no bfloat16 {onnx_op_graphs.node_type(op)} "
                                  "kernel") from None
            raise
        note = f"ONNX {onnx_op_graphs.node_type(op)}"
        if precision == "fp32":
            return Prepared(lambda f: session.run(None, f), feeds,
                            lambda out: onnx_op_graphs.graph_output(op, out[0]), 4, note)
        # numpy has no bfloat16: feed OrtValues made from the bits, read the output's bits back
        values = {k: v if v.dtype == np.int64 else ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            (v.view(np.uint32) >> 16).astype(np.uint16), TensorProto.BFLOAT16) for k, v in feeds.items()}
        return Prepared(lambda f: session.run_with_ort_values(["out"], f), values,
                        lambda out: onnx_op_graphs.graph_output(op, _bf16_ortvalue_to_numpy(out[0])), 2, note)


def _bf16_ortvalue_to_numpy(value) -> np.ndarray:
    import ctypes

    shape = tuple(value.shape())
    bits = np.ctypeslib.as_array((ctypes.c_uint16 * math.prod(shape)).from_address(value.data_ptr()))
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


__all__ = ["OnnxRuntimeKernels"]
