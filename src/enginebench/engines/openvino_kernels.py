"""OpenVINO's single-operator kernels (`enginebench ops`): the one-node ONNX graphs compiled by the CPU plugin;
int8 as a MatMul on FakeQuantize'd int8 inputs, checked to run in int8 in the compiled model's runtime graph."""

from __future__ import annotations

import numpy as np

from enginebench.engines import onnx_op_graphs
from enginebench.engines.kernels import Kernels, Prepared, Unsupported
from enginebench.measure import cpu_features
from enginebench.measure.openvino_runtime import CPU_NEEDS, INTEGER, int8_operand, product_runs


class OpenVinoKernels(Kernels):
    requires = ("openvino", "onnx")

    def setup(self, threads):
        self.threads = threads
        self.threads_info = {"threads": threads, "threads_control": "INFERENCE_NUM_THREADS"}

    def prepare(self, op, arrays, precision):
        import openvino as ov

        core = ov.Core()
        if precision in CPU_NEEDS and (reason := cpu_features.current().missing(CPU_NEEDS[precision],
                                                                              f"openvino {precision}")):
            raise Unsupported(reason)
        if precision == "int8":
            return self._prepare_int8(core, op, arrays)
        feeds = onnx_op_graphs.graph_inputs(op, arrays)
        model = core.read_model(model=onnx_op_graphs.one_node_model(op, feeds))
        compiled = self._compile(core, model, {"fp32": "f32", "bf16": "bf16"}[precision])
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "bf16" and "bf16" not in ran and "bfloat16" not in ran:
            raise Unsupported(f"openvino would compute in {ran} here: this CPU has no bfloat16 instructions")
        self.threads_info["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        request = compiled.create_infer_request()
        note = f"ONNX {onnx_op_graphs.node_type(op)}" + ("; fp32 in and out, bf16 inside" if precision == "bf16"
                                                         else "")
        return Prepared(lambda f: request.infer(f, share_inputs=True), feeds,
                        lambda out: onnx_op_graphs.graph_output(op, np.array(out[0])), 4, note)

    def _compile(self, core, model, hint: str):
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "INFERENCE_NUM_THREADS": self.threads,
                                                 "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})

    def _prepare_int8(self, core, op, arrays) -> Prepared:
        # f32 around the int8 MatMul: a bf16 hint would round its dequantized sums to 8 bits
        compiled = self._compile(core, _openvino_int8_model(op, arrays), "f32")
        ran = product_runs(compiled)
        if ran is None or ran[0] not in INTEGER:
            raise Unsupported(f"openvino would run this MatMul in {ran[0] if ran else 'an unknown precision'} "
                              "here, not int8")
        self.threads_info["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        request = compiled.create_infer_request()
        return Prepared(lambda f: request.infer(f, share_inputs=True), dict(arrays), lambda out: np.array(out[0]), 1,
                        f"FakeQuantize'd int8 inputs; MatMul ran {ran[0]} ({ran[1]}), f32 out")


def _openvino_int8_model(op: str, arrays: dict[str, np.ndarray]):
    """int8 parameters -> Convert -> FakeQuantize (256 levels over -128..127: the identity on these integers) ->
    MatMul (+ the int32 bias for linear). OpenVINO's low-precision transformations fold the FakeQuantizes into an
    int8 MatMul whose int32 sums come out dequantized at scale 1 (float32)."""
    import openvino as ov
    from openvino import opset13 as ops

    params = {name: ops.parameter(list(a.shape), ov.Type.i8 if a.dtype == np.int8 else ov.Type.i32, name=name)
              for name, a in arrays.items()}
    if op == "matmul":
        out = ops.matmul(int8_operand(params["a"]), int8_operand(params["b"]), False, False)
    else:
        out = ops.add(ops.matmul(int8_operand(params["x"]), int8_operand(params["w"]), False, True),
                      ops.convert(params["b"], ov.Type.f32))
    return ov.Model([out], list(params.values()), f"{op}_int8")


__all__ = ["OpenVinoKernels"]
