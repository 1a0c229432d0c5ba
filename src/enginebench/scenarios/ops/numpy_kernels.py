"""numpy's single-operator kernels: the reference row of `enginebench ops` (numpy is no engine of its own).

int8: numpy's int32 matmul loop (no integer BLAS): a slow, exact reference row.
"""

from __future__ import annotations

import math

import numpy as np

from enginebench.engines.kernels import LAYERNORM_EPS, Kernels, Prepared, Unsupported


class NumpyKernels(Kernels):
    requires = ("numpy",)

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
        fn = _NUMPY[op]
        return Prepared(lambda a: fn(*a), tuple(arrays.values()), np.asarray, 4, _NUMPY_NOTES.get(op, ""))


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
    if op == "matmul":
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


__all__ = ["NumpyKernels"]
