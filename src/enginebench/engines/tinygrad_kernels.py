"""tinygrad's single-operator kernels (`enginebench ops`), on its CPU backend."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager

from enginebench.engines.kernels import LAYERNORM_EPS, Kernels, Prepared, Unsupported


class TinygradKernels(Kernels):
    """tinygrad's CPU backend: C kernels compiled by clang, the call replayed by TinyJit (as in
    engines/tinygrad_engine)."""

    requires = ("tinygrad",)

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
        fn = fns[op]
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


__all__ = ["TinygradKernels"]
