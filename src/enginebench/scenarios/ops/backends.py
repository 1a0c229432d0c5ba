"""How each engine expresses each operator.

An engine's `prepare(op, arrays, precision)` does everything but the call: converts the inputs to the
engine's own tensors (in the precision asked for), builds and compiles the graph, and returns a Prepared
whose `run(arg)` is the one call to time. An operator or precision the engine cannot express raises
Unsupported with the reason, which becomes the row's text.

int8 (the GEMMs: matmul, linear; see definitions): integer kernels only, each named in the row's note —
numpy's int32 matmul loop (no integer BLAS: a slow, exact reference row), torch._int_mm (oneDNN s8×s8→s32),
onnxruntime's MatMulInteger (MLAS u8×s8→s32), OpenVINO's MatMul on FakeQuantize'd int8 inputs (checked to run
in int8 in the compiled model's runtime graph), jax's s8×s8→s32 dot, tinygrad's matmul with int32 accumulation
(its own clang-compiled kernel). numpy and onnxruntime get the operand layout their kernels want (prepared
before timing, as an engine packs weights when it loads them).

`setup(threads)` runs once per process, before the engine's library is imported where that matters (XLA
sizes its thread pool when its CPU backend starts).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from enginebench.scenarios.ops import onnx_graphs
from enginebench.scenarios.ops.definitions import LAYERNORM_EPS, Operator


class Unsupported(Exception):
    """The engine cannot express this operator or precision (the message says why)."""


@dataclass
class Prepared:
    run: Callable[[Any], Any]  # the timed call
    arg: Any  # what run is called with, built before timing
    fetch: Callable[[Any], np.ndarray]  # run's result -> a numpy array (outside the timed region)
    io_itemsize: int  # bytes per element the call reads and writes
    note: str = ""  # how the engine expressed it, when worth saying


@dataclass
class Backend:
    name: str
    modules: str  # import names it needs, space-separated, to tell whether it is installed
    threads_info: dict = field(default_factory=dict)

    def installed(self) -> bool:
        import importlib.util

        return all(importlib.util.find_spec(m) is not None for m in self.modules.split())

    def setup(self, threads: int) -> None:
        self.threads_info = {"threads": threads}

    def version(self) -> str | None:
        from importlib import metadata

        name = self.modules.split()[0]
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            import importlib

            return getattr(importlib.import_module(name), "__version__", None)

    def prepare(self, op: Operator, arrays: dict[str, np.ndarray], precision: str) -> Prepared:
        raise NotImplementedError


class NumpyBackend(Backend):
    def setup(self, threads):
        try:  # numpy's BLAS read OPENBLAS_NUM_THREADS when it loaded, which may have been before this
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(threads, user_api="blas")
            self.threads_info = {"threads": threads, "threads_control": "threadpoolctl (BLAS)"}
        except ImportError:
            self.threads_info = {"threads": None, "threads_control": "none (threadpoolctl not installed)"}

    def prepare(self, op, arrays, precision):
        if precision == "int8":
            return _numpy_int8(op, arrays)
        if precision != "fp32":
            raise Unsupported("numpy has no bfloat16 arithmetic")
        fn = _NUMPY[op.name]
        return Prepared(lambda a: fn(*a), tuple(arrays.values()), np.asarray, 4, _NUMPY_NOTES.get(op.name, ""))


def _np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def _np_layernorm(x, gamma, beta):
    centred = x - x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + np.float32(LAYERNORM_EPS))
    return centred * rstd * gamma + beta


def _np_gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x * np.float32(1 / math.sqrt(2))))


def _np_attention(q, k, v):
    scores = np.matmul(q, k.transpose(0, 2, 1)) * np.float32(1 / math.sqrt(q.shape[-1]))
    return np.matmul(_np_softmax(scores), v)


def _np_linear(x, w, b):
    y = x @ w.T
    y += b
    return y


def _numpy_int8(op, arrays) -> Prepared:
    """int8 in, int32 products and sums. numpy has no integer BLAS: its matmul loop is fastest with the second
    operand column-major (contiguous dot products), so that operand is stored transposed before timing."""
    note = "int8 in, int32 matmul (numpy's loop: no integer BLAS)"
    if op.name == "matmul":
        transposed = np.ascontiguousarray(np.swapaxes(arrays["b"], -1, -2))
        return Prepared(lambda a: np.matmul(a[0].astype(np.int32), np.swapaxes(a[1], -1, -2).astype(np.int32)),
                        (arrays["a"], transposed), np.asarray, 1, note)
    return Prepared(lambda a: _np_int8_linear(*a), (arrays["x"], arrays["w"], arrays["b"]), np.asarray, 1, note)


def _np_int8_linear(x, w, b):
    y = x.astype(np.int32) @ w.T.astype(np.int32)  # w is [N, K]: its transpose is column-major
    y += b
    return y


_NUMPY = {"matmul": np.matmul, "linear": _np_linear, "softmax": _np_softmax, "layernorm": _np_layernorm,
          "gelu": _np_gelu, "attention": _np_attention, "add": np.add, "sum": lambda x: x.sum(axis=-1)}
_NUMPY_NOTES = {"softmax": "several ufunc passes", "layernorm": "several ufunc passes",
                "gelu": "scipy.special.erf", "attention": "matmul, softmax, matmul"}


class TorchBackend(Backend):
    def setup(self, threads):
        import torch

        torch.set_num_threads(threads)
        torch.set_grad_enabled(False)
        self.threads_info = {"threads": torch.get_num_threads(), "threads_control": "torch.set_num_threads"}

    def prepare(self, op, arrays, precision):
        import torch
        import torch.nn.functional as F

        if precision == "int8":
            return _torch_int8(op, arrays)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
        fns = {"matmul": torch.matmul, "linear": F.linear, "softmax": lambda x: torch.softmax(x, -1),
               "layernorm": lambda x, g, b: F.layer_norm(x, (x.shape[-1],), g, b, LAYERNORM_EPS),
               "gelu": F.gelu, "attention": F.scaled_dot_product_attention, "add": torch.add,
               "sum": lambda x: x.sum(-1)}
        fn = fns[op.name]
        tensors = tuple(torch.from_numpy(a).to(dtype).contiguous() for a in arrays.values())
        return Prepared(lambda a: fn(*a), tensors, lambda out: out.float().numpy(), 4 if precision == "fp32" else 2)


def _torch_int8(op, arrays) -> Prepared:
    """torch._int_mm: int8 × int8 -> int32, oneDNN's integer GEMM on CPU (seen in ONEDNN_VERBOSE)."""
    import torch

    if not hasattr(torch, "_int_mm"):
        raise Unsupported(f"torch {torch.__version__} has no torch._int_mm (int8 × int8 -> int32)")
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    note = "torch._int_mm, " + ("oneDNN s8×s8→s32" if torch.backends.mkldnn.is_available() else
                                "s8×s8→s32 (no oneDNN in this build)")
    if op.name == "matmul":
        if t["a"].dim() != 2:
            raise Unsupported("torch has no batched int8 matmul on CPU: torch._int_mm takes 2-D matrices")
        return Prepared(lambda a: torch._int_mm(*a), (t["a"], t["b"]), lambda out: out.numpy(), 1, note)
    return Prepared(lambda a: torch._int_mm(a[0], a[1].t()).add_(a[2]), (t["x"], t["w"], t["b"]),
                    lambda out: out.numpy(), 1, note + ", + bias")


class OnnxRuntimeBackend(Backend):
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
        if precision == "int8":
            feeds = onnx_graphs.int8_feeds(op.name, arrays)
            session = ort.InferenceSession(onnx_graphs.int8_model(op.name, feeds), opts,
                                           providers=["CPUExecutionProvider"])
            note = (f"ONNX MatMulInteger, uint8 (zero point {onnx_graphs.INT8_ZERO_POINT}) × int8 → int32"
                    + (", + Add" if op.name == "linear" else ""))
            return Prepared(lambda f: session.run(None, f), feeds, lambda out: out[0], 1, note)
        feeds = onnx_graphs.graph_inputs(op.name, arrays)
        elem = TensorProto.FLOAT if precision == "fp32" else TensorProto.BFLOAT16
        try:
            session = ort.InferenceSession(onnx_graphs.one_node_model(op.name, feeds, elem), opts,
                                           providers=["CPUExecutionProvider"])
        except Exception as e:
            if precision != "fp32" and "NOT_IMPLEMENTED" in str(e):
                raise Unsupported(f"onnxruntime's CPU provider has no bfloat16 {onnx_graphs.node_type(op.name)} "
                                  "kernel") from None
            raise
        note = f"ONNX {onnx_graphs.node_type(op.name)}"
        if precision == "fp32":
            return Prepared(lambda f: session.run(None, f), feeds,
                            lambda out: onnx_graphs.graph_output(op.name, out[0]), 4, note)
        # numpy has no bfloat16: feed OrtValues made from the bits, read the output's bits back
        values = {k: v if v.dtype == np.int64 else ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
            (v.view(np.uint32) >> 16).astype(np.uint16), TensorProto.BFLOAT16) for k, v in feeds.items()}
        return Prepared(lambda f: session.run_with_ort_values(["out"], f), values,
                        lambda out: onnx_graphs.graph_output(op.name, _bf16_ortvalue_to_numpy(out[0])), 2, note)


def _bf16_ortvalue_to_numpy(value) -> np.ndarray:
    import ctypes

    shape = tuple(value.shape())
    bits = np.ctypeslib.as_array((ctypes.c_uint16 * math.prod(shape)).from_address(value.data_ptr()))
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)


class OpenVinoBackend(Backend):
    def setup(self, threads):
        self.threads = threads
        self.threads_info = {"threads": threads, "threads_control": "INFERENCE_NUM_THREADS"}

    def prepare(self, op, arrays, precision):
        import openvino as ov

        core = ov.Core()
        if precision == "int8":
            return self._prepare_int8(core, op, arrays)
        feeds = onnx_graphs.graph_inputs(op.name, arrays)
        model = core.read_model(model=onnx_graphs.one_node_model(op.name, feeds))
        compiled = self._compile(core, model, {"fp32": "f32", "bf16": "bf16"}[precision])
        ran = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if precision == "bf16" and "bf16" not in ran and "bfloat16" not in ran:
            raise Unsupported(f"openvino would compute in {ran} here: this CPU has no bfloat16 instructions")
        self.threads_info["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        request = compiled.create_infer_request()
        note = f"ONNX {onnx_graphs.node_type(op.name)}" + ("; fp32 in and out, bf16 inside" if precision == "bf16" else "")
        return Prepared(lambda f: request.infer(f, share_inputs=True), feeds,
                        lambda out: onnx_graphs.graph_output(op.name, np.array(out[0])), 4, note)

    def _compile(self, core, model, hint: str):
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "INFERENCE_NUM_THREADS": self.threads,
                                                 "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"})

    def _prepare_int8(self, core, op, arrays) -> Prepared:
        # f32 around the int8 MatMul: a bf16 hint would round its dequantized sums to 8 bits
        compiled = self._compile(core, _openvino_int8_model(op.name, arrays), "f32")
        ran = _openvino_matmul_precision(compiled)
        if ran is None or ran[0] not in ("i8", "u8"):
            raise Unsupported(f"openvino would run this MatMul in {ran[0] if ran else 'an unknown precision'} "
                              "here, not int8")
        self.threads_info["threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        request = compiled.create_infer_request()
        return Prepared(lambda f: request.infer(f, share_inputs=True), dict(arrays), lambda out: np.array(out[0]), 1,
                        f"FakeQuantize'd int8 inputs; MatMul ran {ran[0]} ({ran[1]}), f32 out")


def _openvino_int8_model(op_name: str, arrays: dict[str, np.ndarray]):
    """int8 parameters -> Convert -> FakeQuantize (256 levels over -128..127: the identity on these integers) ->
    MatMul (+ the int32 bias for linear). OpenVINO's low-precision transformations fold the FakeQuantizes into an
    int8 MatMul whose int32 sums come out dequantized at scale 1 (float32)."""
    import openvino as ov
    from openvino import opset13 as ops

    def quantized(param):
        lo, hi = np.float32(-128), np.float32(127)
        return ops.fake_quantize(ops.convert(param, ov.Type.f32), lo, hi, lo, hi, 256)

    params = {name: ops.parameter(list(a.shape), ov.Type.i8 if a.dtype == np.int8 else ov.Type.i32, name=name)
              for name, a in arrays.items()}
    if op_name == "matmul":
        out = ops.matmul(quantized(params["a"]), quantized(params["b"]), False, False)
    else:
        out = ops.add(ops.matmul(quantized(params["x"]), quantized(params["w"]), False, True),
                      ops.convert(params["b"], ov.Type.f32))
    return ov.Model([out], list(params.values()), f"{op_name}_int8")


def _openvino_matmul_precision(compiled) -> tuple[str, str] | None:
    """(runtime precision, kernel) of the compiled model's matrix product, from its runtime graph."""
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("MatMul", "FullyConnected"):
            return info["runtimePrecision"].astype(str), info["primitiveType"].astype(str)
    return None


class JaxBackend(Backend):
    def setup(self, threads):
        os.environ["NPROC"] = str(threads)  # XLA:CPU's pool size, read when its backend starts (see engines/jax_xla)
        import jax

        jax.config.update("jax_platforms", "cpu")
        self.threads_info = {"threads": threads, "threads_control": "NPROC before the XLA CPU backend starts"}

    def prepare(self, op, arrays, precision):
        import jax
        import jax.numpy as jnp

        if precision == "int8":
            return _jax_int8(op, arrays)
        dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[precision]
        fns = {"matmul": jnp.matmul, "linear": lambda x, w, b: x @ w.T + b,
               "softmax": lambda x: jax.nn.softmax(x, axis=-1),
               "layernorm": _jax_layernorm, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               # dot_product_attention takes [batch, seq, heads, dim]; ours are [heads, seq, dim]
               "attention": lambda q, k, v: jax.nn.dot_product_attention(q, k, v),
               "add": jnp.add, "sum": lambda x: x.sum(axis=-1)}
        fn = jax.jit(fns[op.name])
        values = arrays.values()
        if op.name == "attention":
            values = (a.transpose(1, 0, 2)[None] for a in values)
        args = tuple(jax.device_put(jnp.asarray(a, dtype=dtype)) for a in values)
        fn(*args).block_until_ready()  # compile outside the timed region

        def fetch(out):
            out = np.asarray(out.astype(jnp.float32))
            return out[0].transpose(1, 0, 2) if op.name == "attention" else out
        return Prepared(lambda a: fn(*a).block_until_ready(), args, fetch, 4 if precision == "fp32" else 2, "jax.jit")


def _jax_int8(op, arrays) -> Prepared:
    """int8 × int8 dot with int32 accumulation (preferred_element_type), as XLA compiles it. linear contracts
    the weights' last axis in place: `x @ w.T` was seen to leave XLA's int8 kernel (~10× slower)."""
    import jax
    import jax.numpy as jnp

    if op.name == "matmul":
        fn = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.int32))
    else:
        fn = jax.jit(lambda x, w, b: jax.lax.dot_general(x, w, (((1,), (1,)), ((), ())),
                                                         preferred_element_type=jnp.int32) + b)
    args = tuple(jax.device_put(a) for a in arrays.values())
    compiled = fn.lower(*args).compile()
    kernel = ", XLA:CPU's YNNPACK fusion" if "ynn" in compiled.as_text().lower() else ""
    compiled(*args).block_until_ready()
    return Prepared(lambda a: compiled(*a).block_until_ready(), args, np.asarray, 1,
                    f"jax.jit, s8×s8→s32 dot{kernel}")


def _jax_layernorm(x, gamma, beta):
    import jax
    import jax.numpy as jnp

    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LAYERNORM_EPS) * gamma + beta


class TinygradBackend(Backend):
    """tinygrad's CPU backend: C kernels compiled by clang, the call replayed by TinyJit (as in
    engines/tinygrad_engine)."""

    def setup(self, threads):
        os.environ["NUM_CPU_THREADS"] = str(threads)  # read when tinygrad is imported
        from tinygrad import Device, helpers

        helpers.NUM_CPU_THREADS.value = threads  # read when a kernel is generated
        try:
            self.device = Device[Device.DEFAULT]
        except Exception as e:  # noqa: BLE001 - e.g. no clang: "no usable devices"
            self.unusable = f"tinygrad has no usable CPU device ({e}; its CPU backend needs clang)"
        # engines/tinygrad_engine measured its kernels on one OS thread whatever the setting
        self.threads_info = {"threads": None, "threads_control": "NUM_CPU_THREADS (tinygrad's CPU kernels were "
                             "seen on one thread whatever it says)", "device": Device.DEFAULT}

    def prepare(self, op, arrays, precision):
        import subprocess

        from tinygrad import Tensor, TinyJit, dtypes

        if getattr(self, "unusable", None):
            raise Unsupported(self.unusable)
        int32 = dtypes.int32
        dtype = {"fp32": dtypes.float32, "bf16": dtypes.bfloat16, "int8": None}[precision]  # int8: kept as given
        fns = {"matmul": lambda a, b: a @ b, "linear": lambda x, w, b: x @ w.T + b,
               "softmax": lambda x: x.softmax(-1),
               "layernorm": lambda x, g, b: x.layernorm(axis=-1, eps=LAYERNORM_EPS) * g + b,
               "gelu": lambda x: 0.5 * x * (1 + (x * (1 / math.sqrt(2))).erf()),  # Tensor.gelu is the tanh form
               "attention": lambda q, k, v: q.scaled_dot_product_attention(k, v),
               "add": lambda x, y: x + y, "sum": lambda x: x.sum(-1)}
        if precision == "int8":  # int8 × int8 products summed in int32, in tinygrad's own clang-compiled kernel
            fns = {"matmul": lambda a, b: a.matmul(b, dtype=int32),
                   "linear": lambda x, w, b: x.matmul(w.T, dtype=int32) + b}
        fn = fns[op.name]
        jitted = TinyJit(lambda *a: fn(*a).realize())
        with _stderr_to_file() as said:  # clang's complaints: kept for the reason, not printed
            try:
                args = tuple((Tensor(a) if dtype is None else Tensor(a).cast(dtype)).realize() for a in arrays.values())
                for _ in range(3):  # TinyJit captures the kernels on its second call, replays them from the third
                    jitted(*args)
                error = None
            except subprocess.CalledProcessError:
                error = next((line.split("error:", 1)[1].strip() for line in said() if "error:" in line), "")
        if error is not None:
            reason = f"tinygrad's CPU backend could not compile its {precision} kernels with this clang" + (
                f" ({error})" if error else "")
            if precision == "fp32":
                raise RuntimeError(reason)
            raise Unsupported(reason)
        device = self.device

        def run(a):
            result = jitted(*a)
            device.synchronize()
            return result
        if precision == "int8":
            return Prepared(run, args, lambda out: out.numpy(), 1, "TinyJit, int8 × int8 summed in int32 (clang)")
        return Prepared(run, args, lambda out: out.cast(dtypes.float32).numpy(), 4 if precision == "fp32" else 2,
                        "TinyJit")


@contextmanager
def _stderr_to_file():
    """Point file descriptor 2 (a compiler's stderr, inherited) at a temporary file; yields a function giving
    the lines written there."""
    import tempfile

    with tempfile.TemporaryFile(mode="w+b") as file:
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        try:
            yield lambda: (file.seek(0), file.read().decode(errors="replace").splitlines())[1]
        finally:
            os.dup2(saved, 2)
            os.close(saved)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "numpy": lambda: NumpyBackend("numpy", "numpy"),
    "torch": lambda: TorchBackend("torch", "torch"),
    "onnxruntime": lambda: OnnxRuntimeBackend("onnxruntime", "onnxruntime onnx"),
    "openvino": lambda: OpenVinoBackend("openvino", "openvino onnx"),
    "jax": lambda: JaxBackend("jax", "jax"),
    "tinygrad": lambda: TinygradBackend("tinygrad", "tinygrad"),
}
INSTALL = {"numpy": "numpy", "torch": "enginebench[torch]", "onnxruntime": "enginebench[onnxruntime]",
           "openvino": "enginebench[openvino]", "jax": "enginebench[jax]", "tinygrad": "enginebench[tinygrad]"}


def backend(name: str) -> Backend:
    return BACKENDS[name]()


__all__ = ["Backend", "Prepared", "Unsupported", "BACKENDS", "INSTALL", "backend"]
