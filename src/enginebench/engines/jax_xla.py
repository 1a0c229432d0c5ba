"""JAX / XLA: the BERT encoder forward written in jax.numpy, compiled by XLA under jax.jit.

Why a JAX forward rather than torchax: torchax runs the torch model by dispatching torch ops to JAX one at a
time, so it needs torch installed in the engine's process (its memory would count against JAX) and it
measures torchax's op-by-op translation as much as XLA. A jax.numpy forward read straight from safetensors is
what a JAX user deploys, needs no torch, and lets XLA see one whole graph per input shape.

Threads: in jax 0.10 XLA:CPU takes its thread-pool size from the NPROC environment variable, read once when
the CPU backend starts (`--xla_cpu_multi_thread_eigen=false` changes nothing there and
`intra_op_parallelism_threads` is an unknown flag that aborts the process), so load() sets NPROC=threads
before the first JAX call. XLA_FLAGS passes through from the environment untouched and is recorded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.jax_kernels import JaxKernels
from enginebench.engines.jax_llama import load_jax_llama
from enginebench.measure.quantization import weights_precision
from enginebench.models.bert_weights import load_bert_weights, read_bert_config
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch


@dataclass(frozen=True)
class JaxOptions(EngineOptions):
    pass


def _layer_norm(jnp, x, weight, bias, eps):
    # statistics in float32 even under bf16: the variance of 384+ values loses too much in 8 mantissa bits
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    return ((x32 - mean) / jnp.sqrt(var + eps) * weight + bias).astype(x.dtype)


def _activation(jax, name: str):
    return {
        "gelu_erf": lambda x: jax.nn.gelu(x, approximate=False),
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
    }[name]


def build_forward(config, dtype):
    """A pure function (weights, input_ids, attention_mask, token_type_ids) -> L2-normalised mean-pooled embeddings."""
    import jax
    import jax.numpy as jnp

    act = _activation(jax, config.activation)
    eps, heads, head_dim = config.layer_norm_eps, config.num_heads, config.head_dim

    def forward(weights, input_ids, attention_mask, token_type_ids):
        emb = weights["embeddings"]
        batch, seq = input_ids.shape
        x = emb["word"][input_ids] + emb["token_type"][token_type_ids] + emb["position"][:seq][None]
        x = _layer_norm(jnp, x, emb["ln_w"], emb["ln_b"], eps).astype(dtype)
        # additive mask over keys, as transformers' BERT does: padding gets the dtype's most negative value
        bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)

        def split(t):
            return t.reshape(batch, seq, heads, head_dim).transpose(0, 2, 1, 3)

        for layer in weights["layers"]:
            q = split(x @ layer["q_w"] + layer["q_b"])
            k = split(x @ layer["k_w"] + layer["k_b"])
            v = split(x @ layer["v_w"] + layer["v_b"])
            scores = (q @ k.transpose(0, 1, 3, 2)).astype(jnp.float32) / np.sqrt(head_dim) + bias
            probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, seq, heads * head_dim)
            x = _layer_norm(jnp, context @ layer["o_w"] + layer["o_b"] + x, layer["ln1_w"], layer["ln1_b"], eps)
            h = act(x @ layer["up_w"] + layer["up_b"])
            x = _layer_norm(jnp, h @ layer["down_w"] + layer["down_b"] + x, layer["ln2_w"], layer["ln2_b"], eps)

        mask = attention_mask[..., None].astype(jnp.float32)
        pooled = (x.astype(jnp.float32) * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
        norm = jnp.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / jnp.maximum(norm, 1e-12)

    return forward


class JaxSession(Session):
    def __init__(self, forward, weights, jax, precision: str, details: dict):
        self.forward = forward
        self.weights = weights
        self.jax = jax
        self.executed_precision = precision
        self.details = details
        self._compiled_shapes: set[tuple[int, int]] = set()

    def prepare(self, batch: TokenBatch):
        arrays = tuple(self.jax.device_put(a.astype(np.int32)) for a in
                       (batch.input_ids, batch.attention_mask, batch.token_type_ids))
        shape = batch.input_ids.shape
        if shape not in self._compiled_shapes:  # jit compiles per shape: do it here, never in a timed run
            self.forward(self.weights, *arrays).block_until_ready()
            self._compiled_shapes.add(shape)
            self.details["compiled_shapes"] = sorted(self._compiled_shapes)
        return arrays

    def run(self, prepared) -> np.ndarray:
        return np.asarray(self.forward(self.weights, *prepared))


class JaxEngine(Engine):
    name = "jax"
    op_kernels = JaxKernels
    prepares = "compiles the model with XLA"
    library = "jax"
    requires = ("jax", "jaxlib", "safetensors")
    extra = "jax"
    precisions = ("fp32", "bf16")
    formats = ("safetensors",)
    Options = JaxOptions
    model_kinds = ("encoder", "decoder")
    library_precisions = ("fp16", "fp8")  # dtypes jax.numpy computes in; fp8 is emulated on CPUs
    backend = "XLA: whole-graph compilation per input shape (Eigen / oneDNN kernels on CPU)"
    parallelism = "yes (jax.sharding over devices)"
    training = "yes (jax.grad; optimizers from optax)"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import jax

        return tuple(sorted({d.platform for d in jax.devices()}))

    def load(self, model: ModelSpec, precision: str, options: JaxOptions) -> Session:
        from jax._src import xla_bridge

        threads_applied = not xla_bridge.backends_are_initialized()
        if threads_applied:
            os.environ["NPROC"] = str(options.threads)
        import jax
        import jax.numpy as jnp

        dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[precision]
        device = jax.devices()[0]
        details = {
            "backend": jax.default_backend(),
            "device": f"{device.platform}:{device.device_kind}",
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "nproc": os.environ.get("NPROC"),
            "threads_control": "NPROC env var set before the XLA CPU backend starts" if threads_applied else
                               "backend already started in this process: NPROC left as it was",
            "compute_dtype": jnp.dtype(dtype).name,
            **_threads_used(threads_applied, options.threads),
        }
        if model.kind == "decoder":
            return _read_back_precision(load_jax_llama(model, precision, details))
        config = read_bert_config(model.path)
        host = load_bert_weights(model.path, config)
        # embeddings and layer-norm parameters stay float32; the matmul weights and biases take the compute dtype
        weights = {
            "embeddings": {k: jnp.asarray(v) for k, v in host["embeddings"].items()},
            "layers": [{k: jnp.asarray(v, jnp.float32 if k.startswith("ln") else dtype) for k, v in layer.items()}
                       for layer in host["layers"]],
        }
        forward = jax.jit(build_forward(config, dtype))
        return _read_back_precision(JaxSession(forward, weights, jax, precision, details))


def _threads_used(applied: bool, requested: int) -> dict:
    """XLA:CPU sizes its thread pool from NPROC when the backend starts (else from the CPUs this process may
    use) and does not report it: what it read is recorded, with where it came from."""
    if applied:
        return {"threads_used": requested, "threads_source": "NPROC, set before the XLA CPU backend started"}
    nproc = os.environ.get("NPROC")
    if nproc and nproc.isdigit():
        return {"threads_used": int(nproc), "threads_source": "NPROC as it was when the XLA CPU backend started "
                                                              "(earlier in this process): --threads had no effect"}
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"threads_used": cpus,
            "threads_source": "XLA's default (the CPUs this process may use): the backend started before NPROC "
                              "could be set"}


def _read_back_precision(session):
    """Set the session's executed precision from the dtype of the matmul weights it holds (jit computes each
    product in its operands' dtype), rather than from the precision asked for."""
    dtypes = [array.dtype for layer in session.weights["layers"] for array in layer.values()
              if getattr(array, "ndim", 0) == 2]
    if dtypes:
        session.executed_precision = weights_precision(dtypes)
        session.details["executed_precision_source"] = "dtype of the jax arrays holding the matmul weights"
    else:
        session.details["executed_precision_source"] = "requested (the library does not report it)"
    return session
