"""JAX's single-operator kernels (`enginebench ops`): each operator under jax.jit on XLA:CPU; int8 as an
s8×s8→s32 dot."""

from __future__ import annotations

import os

import numpy as np

from enginebench.engines.kernels import LAYERNORM_EPS, Kernels, Prepared


class JaxKernels(Kernels):
    requires = ("jax",)

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
        fn = jax.jit(fns[op])
        values = arrays.values()
        if op == "attention":
            values = (a.transpose(1, 0, 2)[None] for a in values)
        args = tuple(jax.device_put(jnp.asarray(a, dtype=dtype)) for a in values)
        fn(*args).block_until_ready()  # compile outside the timed region

        def fetch(out):
            out = np.asarray(out.astype(jnp.float32))
            return out[0].transpose(1, 0, 2) if op == "attention" else out
        return Prepared(lambda a: fn(*a).block_until_ready(), args, fetch, 4 if precision == "fp32" else 2, "jax.jit")


def _jax_int8(op, arrays) -> Prepared:
    """int8 × int8 dot with int32 accumulation (preferred_element_type), as XLA compiles it. linear contracts
    the weights' last axis in place: `x @ w.T` was seen to leave XLA's int8 kernel (~10× slower)."""
    import jax
    import jax.numpy as jnp

    if op == "matmul":
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


__all__ = ["JaxKernels"]
