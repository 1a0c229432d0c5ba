"""The operators `enginebench ops` times: their shapes, the work they do and the answer they must give.

Work is counted as the roofline counts it:
- FLOPs: a multiply-add is 2, an exp, erf, sqrt or division is 1 (a convention: the hardware spends more on
  a transcendental, but what matters is comparing engines on the same count).
- bytes: the compulsory traffic, every input read once and the output written once, at the element size the
  engine reads and writes. Intermediates (attention's scores) are assumed to stay in cache.

Inputs are seeded standard normals, the same for every engine. The reference is numpy float64 on the very
values the engine receives (rounded to bfloat16 first when the precision is bf16).

int8 is for the GEMMs only (matmul, linear), where engines have integer kernels: int8 activations, int8
weights, int32 accumulation and output (linear's bias is int32). Work is counted the same way (a multiply-add
is 2 integer ops: GOP/s); bytes are 1 per int8 element read and 4 per int32 element. The reference is numpy's
int64 matmul of the same integers, so an engine's answer must be exact.

The int8 ranges keep every engine exact on every x86 CPU. Without VNNI (AVX2, AVX-512 without VNNI), oneDNN
and onnxruntime's MLAS multiply uint8 by int8 with vpmaddubsw, which adds two products into a saturating int16:
signed activations are shifted to uint8 first (0..255), so the weights must keep |w| ≤ 64 for 2·255·64 =
32640 to fit (the "reduce_range" of onnxruntime's quantizer, and oneDNN's advice for non-VNNI CPUs). Seen with
ONEDNN_MAX_CPU_ISA=AVX2: full-range weights made torch._int_mm wrong by 10^4 and more; 7-bit weights were exact.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from enginebench.engines.kernels import LAYERNORM_EPS
from enginebench.errors import UsageError

Shape = tuple[int, ...]
PRECISIONS = {"fp32": 4, "bf16": 2, "int8": 1}  # precision -> bytes per input element
# max |out - ref| / max |ref| an engine may reach before its row is flagged: fp32 accumulates rounding of
# 2^-24 per step; bf16 keeps 8 significant bits (2^-8 ≈ 4e-3 per rounding, the output rounded once more).
# int8 accumulates in int32, exactly: the one error allowed is an engine handing the int32 sums back as float32
# (OpenVINO dequantizes at scale 1), rounded only where a sum passes 2^24, by at most 2^-24 of it. A sum off by
# one still fails while max |ref| < 2^24: always for K ≤ 2000 (2000·128·64 + 2^15 < 2^24), and in practice for
# the largest models' K too, where random signs keep the sums far smaller.
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2, "int8": 2 ** -24}
INT8_ACTIVATIONS = (-128, 127)  # the full int8 range
INT8_WEIGHTS = (-64, 63)  # 7 bits: see the module's docstring (vpmaddubsw's int16 saturation without VNNI)
INT32_BIAS = (-(1 << 15), (1 << 15) - 1)


@dataclass(frozen=True)
class Operator:
    name: str
    formula: str  # what it computes, in a line
    layouts: tuple[tuple[str, ...], ...]  # accepted dimension names, e.g. (("M", "K", "N"), ("B", "M", "K", "N"))
    example: Shape  # a shape for messages; the shapes measured by default come from the models (shapes.py)
    flops: Callable[[Shape], int]
    elements: Callable[[Shape], int]  # elements read + written (compulsory traffic)
    inputs: Callable[[Shape, np.random.Generator], dict[str, np.ndarray]]  # float32 arrays, in argument order
    reference: Callable[[dict[str, np.ndarray]], np.ndarray]  # on float64 (int8: int64) copies of the inputs
    # int8 integer inputs (int8, int32 bias) and the bytes they and the int32 output take; None: no int8 kernel
    int8_inputs: Callable[[Shape, np.random.Generator], dict[str, np.ndarray]] | None = None
    int8_bytes: Callable[[Shape], int] | None = None

    def bytes_moved(self, shape: Shape, itemsize: int) -> int:
        return self.elements(shape) * itemsize

    def bytes_for(self, shape: Shape, precision: str, itemsize: int | None = None) -> int:
        """Compulsory bytes in this precision: int8 counts 1-byte inputs and 4-byte sums; the float precisions
        `itemsize` bytes an element (the engine's, else the precision's)."""
        if precision == "int8" and self.int8_bytes:
            return self.int8_bytes(shape)
        return self.bytes_moved(shape, itemsize or PRECISIONS[precision])

    def why_not(self, precision: str) -> str | None:
        """Why no engine runs this operator in `precision`, or None."""
        if precision == "int8" and self.int8_inputs is None:
            gemms = ", ".join(op.name for op in OPERATORS.values() if op.int8_inputs)
            return f"{self.name} has no int8 kernel in these engines: int8 rows are the GEMMs ({gemms})"
        return None

    def intensity(self, shape: Shape, itemsize: int) -> float:
        """FLOPs per byte moved: the roofline's x axis."""
        return self.flops(shape) / self.bytes_moved(shape, itemsize)

    def dims(self, shape: Shape) -> tuple[str, ...]:
        return next(names for names in self.layouts if len(names) == len(shape))

    def parse_shape(self, text: str) -> Shape:
        """`128x384x384` (or with ×) -> (128, 384, 384), checked against this operator's layouts."""
        parts = [p for p in re.split(r"\s*[x×,]\s*", text.strip().lower()) if p]
        expected = " or ".join("×".join(names) for names in self.layouts)
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise UsageError(f"--shape {text!r} for {self.name} is not whole numbers: give {expected}, "
                             f"e.g. {format_shape(self.example)}") from None
        if not any(len(shape) == len(names) for names in self.layouts):
            raise UsageError(f"--shape {text!r}: {self.name} takes {expected}, e.g. {format_shape(self.example)}")
        if min(shape) < 1:
            raise UsageError(f"--shape {text!r}: every dimension must be at least 1")
        return shape


def format_shape(shape: Shape) -> str:
    return "×".join(map(str, shape))


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


# matmul: M×K×N, or B×M×K×N batched (B independent products)
def _mm_dims(s: Shape) -> tuple[int, int, int, int]:
    return (1, *s) if len(s) == 3 else s  # type: ignore[return-value]


def _mm_inputs(s, rng):
    b, m, k, n = _mm_dims(s)
    lead = (b,) if len(s) == 4 else ()
    return {"a": _normal(rng, *lead, m, k), "b": _normal(rng, *lead, k, n)}


def _integers(rng: np.random.Generator, bounds: tuple[int, int], *shape: int, dtype=np.int8) -> np.ndarray:
    return rng.integers(bounds[0], bounds[1], shape, dtype=dtype, endpoint=True)


def _mm_int8_inputs(s, rng):
    b, m, k, n = _mm_dims(s)
    lead = (b,) if len(s) == 4 else ()
    return {"a": _integers(rng, INT8_ACTIVATIONS, *lead, m, k), "b": _integers(rng, INT8_WEIGHTS, *lead, k, n)}


def _mm_int8_bytes(s):
    b, m, k, n = _mm_dims(s)
    return b * (m * k + k * n + 4 * m * n)


MATMUL = Operator(
    "matmul", "C = A @ B", (("M", "K", "N"), ("B", "M", "K", "N")),
    (128, 384, 384),
    flops=lambda s: 2 * math.prod(_mm_dims(s)),
    elements=lambda s: (lambda b, m, k, n: b * (m * k + k * n + m * n))(*_mm_dims(s)),
    inputs=_mm_inputs,
    reference=lambda x: x["a"] @ x["b"],
    int8_inputs=_mm_int8_inputs,
    int8_bytes=_mm_int8_bytes,
)

# linear: x[M,K] @ W[N,K]^T + bias[N] (a torch nn.Linear: weights stored output-major)
LINEAR = Operator(
    "linear", "y = x @ Wᵀ + b", (("M", "K", "N"),),
    (128, 384, 1536),
    flops=lambda s: 2 * s[0] * s[1] * s[2] + s[0] * s[2],
    elements=lambda s: s[0] * s[1] + s[2] * s[1] + s[2] + s[0] * s[2],
    inputs=lambda s, rng: {"x": _normal(rng, s[0], s[1]), "w": _normal(rng, s[2], s[1]), "b": _normal(rng, s[2])},
    reference=lambda x: x["x"] @ x["w"].T + x["b"],
    int8_inputs=lambda s, rng: {"x": _integers(rng, INT8_ACTIVATIONS, s[0], s[1]),
                                "w": _integers(rng, INT8_WEIGHTS, s[2], s[1]),
                                "b": _integers(rng, INT32_BIAS, s[2], dtype=np.int32)},
    int8_bytes=lambda s: s[0] * s[1] + s[2] * s[1] + 4 * s[2] + 4 * s[0] * s[2],
)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# softmax over the last axis of R×C: max, subtract, exp, sum, divide = 5 FLOPs an element
SOFTMAX = Operator(
    "softmax", "y = exp(x - max) / Σ exp(x - max), over the last axis", (("R", "C"),),
    (1536, 128),
    flops=lambda s: 5 * s[0] * s[1],
    elements=lambda s: 2 * s[0] * s[1],
    inputs=lambda s, rng: {"x": _normal(rng, *s)},
    reference=lambda x: _softmax(x["x"]),
)


def _layernorm(x, gamma, beta):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYERNORM_EPS) * gamma + beta


# layer norm over the last axis of R×C: mean 1, centre 1, square-and-sum 2, scale 1, gamma 1, beta 1 = 7
LAYERNORM = Operator(
    "layernorm", "y = (x - mean) / sqrt(var + 1e-5) · γ + β, over the last axis", (("R", "C"),),
    (128, 384),
    flops=lambda s: 7 * s[0] * s[1],
    elements=lambda s: 2 * s[0] * s[1] + 2 * s[1],
    inputs=lambda s, rng: {"x": _normal(rng, *s), "gamma": 1 + 0.1 * _normal(rng, s[1]),
                           "beta": 0.1 * _normal(rng, s[1])},
    reference=lambda x: _layernorm(x["x"], x["gamma"], x["beta"]),
)


def _gelu(x):
    from scipy.special import erf

    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


# exact (erf) GELU, elementwise: divide 1, erf 1, add 1, two multiplies = 5
GELU = Operator(
    "gelu", "y = x · Φ(x) = x/2 · (1 + erf(x/√2))", (("R", "C"),),
    (128, 1536),
    flops=lambda s: 5 * s[0] * s[1],
    elements=lambda s: 2 * s[0] * s[1],
    inputs=lambda s, rng: {"x": _normal(rng, *s)},
    reference=lambda x: _gelu(x["x"]),
)


def _attn_dims(s: Shape) -> tuple[int, int, int, int]:
    """H×S×D (self-attention) or H×Sq×Skv×D (queries against a longer key/value cache) -> H, Sq, Skv, D."""
    return (s[0], s[1], s[1], s[2]) if len(s) == 3 else s  # type: ignore[return-value]


def _attention(q, k, v):
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    return _softmax(scores) @ v


def _attn_inputs(s, rng):
    h, sq, skv, d = _attn_dims(s)
    return {"q": _normal(rng, h, sq, d), "k": _normal(rng, h, skv, d), "v": _normal(rng, h, skv, d)}


# scaled dot-product attention, batch 1, no mask: Q·Kᵀ 2·Sq·Skv·D, scale Sq·Skv, softmax 5·Sq·Skv,
# P·V 2·Sq·Skv·D, per head
ATTENTION = Operator(
    "attention", "softmax(Q Kᵀ / √D) V, per head", (("H", "S", "D"), ("H", "Sq", "Skv", "D")),
    (12, 128, 32),
    flops=lambda s: (lambda h, sq, skv, d: h * (4 * sq * skv * d + 6 * sq * skv))(*_attn_dims(s)),
    elements=lambda s: (lambda h, sq, skv, d: h * (2 * sq * d + 2 * skv * d))(*_attn_dims(s)),
    inputs=_attn_inputs,
    reference=lambda x: _attention(x["q"], x["k"], x["v"]),
)

# the residual connection: one add an element, two reads and a write
ADD = Operator(
    "add", "z = x + y, elementwise", (("R", "C"),),
    (128, 384),
    flops=lambda s: s[0] * s[1],
    elements=lambda s: 3 * s[0] * s[1],
    inputs=lambda s, rng: {"x": _normal(rng, *s), "y": _normal(rng, *s)},
    reference=lambda x: x["x"] + x["y"],
)

# a reduction: the sum over the last axis, R×C -> R
SUM = Operator(
    "sum", "y = Σ x, over the last axis", (("R", "C"),),
    (128, 384),
    flops=lambda s: s[0] * s[1],
    elements=lambda s: s[0] * s[1] + s[0],
    inputs=lambda s, rng: {"x": _normal(rng, *s)},
    reference=lambda x: x["x"].sum(axis=-1),
)

OPERATORS: dict[str, Operator] = {op.name: op for op in (MATMUL, LINEAR, SOFTMAX, LAYERNORM, GELU, ATTENTION, ADD, SUM)}


def require_operator(name: str) -> Operator:
    if name not in OPERATORS:
        raise UsageError(f"unknown operator {name!r}: choose among {', '.join(OPERATORS)}")
    return OPERATORS[name]


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)


def make_inputs(op: Operator, shape: Shape, precision: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The operator's float32 inputs for this shape; in bf16, already rounded to bf16 values; in int8, integers
    (int8, and int32 for a bias)."""
    if precision == "int8":
        if op.int8_inputs is None:
            raise ValueError(op.why_not(precision))
        return op.int8_inputs(shape, np.random.default_rng(seed))
    arrays = op.inputs(shape, np.random.default_rng(seed))
    return {k: round_to_bf16(v) for k, v in arrays.items()} if precision == "bf16" else arrays


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """max |out - ref| / max |ref|: one figure per output, indifferent to elements near zero."""
    out = np.asarray(out, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"output shape {out.shape} differs from the reference's {ref.shape}")
    scale = float(np.abs(ref).max()) or 1.0
    return float(np.abs(out - ref).max()) / scale


def check_output(op: Operator, inputs: dict[str, np.ndarray], out: np.ndarray) -> float:
    """Against numpy float64 on the same values; integer inputs (int8) against numpy's exact int64 matmul."""
    exact = all(np.issubdtype(v.dtype, np.integer) for v in inputs.values())
    ref = op.reference({k: v.astype(np.int64 if exact else np.float64) for k, v in inputs.items()})
    return relative_error(out, ref)


__all__ = ["Operator", "OPERATORS", "PRECISIONS", "TOLERANCE", "INT8_ACTIVATIONS", "INT8_WEIGHTS", "INT32_BIAS",
           "require_operator", "format_shape", "make_inputs",
           "round_to_bf16", "relative_error", "check_output"]
