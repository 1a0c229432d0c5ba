"""JAX / XLA Llama decoder: the Llama forward in jax.numpy with a fixed-size KV cache, prefill and decode jitted apart.

Shapes are static under jit, so the cache has a fixed capacity (a power of two, at least the prompt plus
one token) and decode attends over the whole capacity with a mask: one compilation per (batch, capacity),
not one per step. When a sequence outgrows the capacity the cache is doubled (a copy, once per doubling,
as a growing buffer does in any engine). XLA compiles per shape on first use, so a generate run needs an
untimed warm-up of the same shape; the first call of each shape is recorded in details["compiled_shapes"].

The cache is donated to decode, so XLA writes the new key/value in place instead of copying the cache
every step. bf16 runs the weights and the activations between layers in bfloat16, matmuls accumulated in
float32; RMSNorm, rotary embeddings, attention, the KV cache and the logits stay float32 (on SmolLM2 a bf16
cache and bf16 attention dots saved no CPU time per token under XLA:CPU, and float32 keeps the cache exact).
XLA:CPU (jax 0.10) runs a one-row bf16 dot in a generic loop ~15x slower than float32, so batch-1 decode
pads its bf16 matmuls to two rows (see dot32).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.errors import UsageError
from enginebench.models.safetensors_shards import iter_tensors, weight_files
from enginebench.models.spec import ModelSpec

MIN_CAPACITY = 256


@dataclass(frozen=True)
class LlamaShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    eps: float
    rope_theta: float
    max_positions: int
    tied: bool


def read_llama_shape(folder: str | Path, engine: str = "jax") -> LlamaShape:
    """The Llama config fields a hand-written forward needs; what it does not implement is refused."""
    config = json.loads((Path(folder) / "config.json").read_text())
    rope = config.get("rope_parameters") or {}  # transformers 5 moves rope_theta here
    scaling = config.get("rope_scaling") or {}
    rope_type = scaling.get("rope_type", scaling.get("type")) or rope.get("rope_type", "default")
    if rope_type != "default":
        raise UsageError(f"{folder}: rope scaling {rope_type!r} is not implemented by the {engine} Llama; "
                         "use a model without rope_scaling or another engine")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UsageError(f"{folder}: Llama with attention/MLP biases is not implemented by the {engine} Llama")
    heads = int(config["num_attention_heads"])
    return LlamaShape(
        layers=int(config["num_hidden_layers"]), hidden=int(config["hidden_size"]), heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
        intermediate=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
        eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(config.get("rope_theta", rope.get("rope_theta", 10000.0))),
        max_positions=int(config.get("max_position_embeddings", 2048)),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def load_llama_weights(folder: str | Path, shape: LlamaShape, dtype) -> dict:
    """The weights as jax arrays, matrices transposed to [in, out] with q/k/v and gate/up fused into one matmul."""
    import jax.numpy as jnp

    folder = Path(folder)
    available = set(weight_files(folder))

    def take(*names: str) -> list[np.ndarray]:  # read on demand: host memory holds a few tensors at a time
        return [array for _, array in iter_tensors(folder, list(names))]

    def matrix(*names: str):  # HF Linear weights are [out, in]; x @ W wants [in, out]
        return jnp.asarray(np.concatenate(take(*names), axis=0).T, dtype=dtype)

    def norm(name: str):
        return jnp.asarray(take(name)[0], dtype=jnp.float32)

    layers = []
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        layers.append({
            "attn_norm": norm(p + "input_layernorm.weight"),
            "qkv": matrix(*(p + f"self_attn.{x}_proj.weight" for x in "qkv")),
            "o": matrix(p + "self_attn.o_proj.weight"),
            "mlp_norm": norm(p + "post_attention_layernorm.weight"),
            "gate_up": matrix(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
            "down": matrix(p + "mlp.down_proj.weight"),
        })
    (embed,) = take("model.embed_tokens.weight")
    (lm_head,) = take("lm_head.weight") if "lm_head.weight" in available and not shape.tied else (embed,)
    return {
        "embed": jnp.asarray(embed, dtype=dtype),
        "layers": layers,
        "norm": norm("model.norm.weight"),
        "lm_head": jnp.asarray(lm_head.T, dtype=dtype),
    }


def build_llama(shape: LlamaShape, dtype):
    """Jitted (prefill, decode, all_logits, grow): pure functions of the weights and cache; see the module docstring."""
    import jax
    import jax.numpy as jnp

    heads, kv_heads, hd = shape.heads, shape.kv_heads, shape.head_dim
    group = heads // kv_heads
    inv_freq = 1.0 / (shape.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    inv_freq = jnp.asarray(inv_freq, dtype=jnp.float32)

    def dot32(x, w):
        """x [..., in] @ w [in, out] accumulated and returned in float32."""
        rows = x.reshape(-1, x.shape[-1])
        if dtype == jnp.bfloat16 and rows.shape[0] == 1:
            # one row takes XLA:CPU's slow generic bf16 loop (SmolLM2's lm_head: 173 ms vs 17 ms for two rows,
            # 12 ms in float32): pad to two rows and drop the copy
            return jnp.matmul(jnp.concatenate([rows, rows]), w, preferred_element_type=jnp.float32)[:1].reshape(
                *x.shape[:-1], w.shape[-1])
        return jnp.matmul(x, w, preferred_element_type=jnp.float32)

    def matmul(x, w):
        return dot32(x, w).astype(dtype)

    def rms_norm(x, weight):
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + shape.eps)
        return (weight * x32.astype(dtype).astype(jnp.float32)).astype(dtype)  # as transformers' LlamaRMSNorm

    def rotate(x, positions):  # x [batch, n, heads, hd], positions [n]
        freqs = positions.astype(jnp.float32)[:, None] * inv_freq[None]
        angles = jnp.concatenate([freqs, freqs], axis=-1)[None, :, None, :]
        cos, sin = jnp.cos(angles), jnp.sin(angles)
        x32 = x.astype(jnp.float32)
        half = hd // 2
        rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
        return x32 * cos + rotated * sin  # float32: attention and the cache stay float32

    def attend(q, keys, values, q_positions, key_count):
        """float32 q [b, n, heads, hd]; keys/values [b, kv_heads, s, hd]; causal by position; keys >= key_count masked."""
        b, n = q.shape[:2]
        q = q.reshape(b, n, kv_heads, group, hd).transpose(0, 2, 3, 1, 4)  # [b, kv, group, n, hd]
        scores = jnp.einsum("bkgqd,bksd->bkgqs", q, keys) / np.sqrt(hd)
        key_pos = jnp.arange(keys.shape[2])
        allowed = (key_pos[None, :] <= q_positions[:, None]) & (key_pos[None, :] < key_count)
        scores = jnp.where(allowed[None, None, None], scores, -jnp.inf)
        out = jnp.einsum("bkgqs,bksd->bkgqd", jax.nn.softmax(scores, axis=-1), values)
        return out.transpose(0, 3, 1, 2, 4).reshape(b, n, heads * hd).astype(dtype)

    def block(layer, x, positions, attention):
        """One decoder layer; `attention(q, k, v) -> context` owns the cache handling."""
        b, n = x.shape[:2]
        qkv = matmul(rms_norm(x, layer["attn_norm"]), layer["qkv"])
        q = rotate(qkv[..., :heads * hd].reshape(b, n, heads, hd), positions)
        k = rotate(qkv[..., heads * hd:(heads + kv_heads) * hd].reshape(b, n, kv_heads, hd), positions)
        v = qkv[..., (heads + kv_heads) * hd:].reshape(b, n, kv_heads, hd).astype(jnp.float32)
        x = x + matmul(attention(q, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)), layer["o"])
        gate, up = jnp.split(matmul(rms_norm(x, layer["mlp_norm"]), layer["gate_up"]), 2, axis=-1)
        return x + matmul(jax.nn.silu(gate) * up, layer["down"])

    def logits_of(weights, x):
        x = rms_norm(x, weights["norm"])
        return dot32(x, weights["lm_head"])

    def run_prompt(weights, tokens, capacity):
        """The prompt at positions 0..n-1: hidden states and the cache (capacity positions, first n filled)."""
        b, n = tokens.shape
        positions = jnp.arange(n)
        x = weights["embed"][tokens]
        cache = []
        for layer in weights["layers"]:
            def attention(q, k, v):
                pad = ((0, 0), (0, 0), (0, capacity - n), (0, 0))
                cache.append((jnp.pad(k, pad), jnp.pad(v, pad)))
                return attend(q, k, v, positions, n)
            x = block(layer, x, positions, attention)
        return x, cache

    def prefill(weights, tokens, capacity):
        x, cache = run_prompt(weights, tokens, capacity)
        return logits_of(weights, x[:, -1]), cache

    def all_logits(weights, tokens):
        x, _ = run_prompt(weights, tokens, tokens.shape[1])
        return logits_of(weights, x)

    def decode(weights, tokens, cache, position):
        positions = position[None]
        x = weights["embed"][tokens]
        new_cache = []
        for layer, (k_cache, v_cache) in zip(weights["layers"], cache):
            def attention(q, k, v, k_cache=k_cache, v_cache=v_cache):
                k_all = jax.lax.dynamic_update_slice(k_cache, k, (0, 0, position, 0))
                v_all = jax.lax.dynamic_update_slice(v_cache, v, (0, 0, position, 0))
                new_cache.append((k_all, v_all))
                return attend(q, k_all, v_all, positions, position + 1)
            x = block(layer, x, positions, attention)
        return logits_of(weights, x[:, -1]), new_cache

    def grow(cache, capacity):
        pad = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, capacity - a.shape[2]), (0, 0)))
        return [(pad(k), pad(v)) for k, v in cache]

    return (jax.jit(prefill, static_argnames="capacity"), jax.jit(decode, donate_argnums=2),
            jax.jit(all_logits), jax.jit(grow, static_argnames="capacity"))


def capacity_for(tokens: int, minimum: int = MIN_CAPACITY) -> int:
    return max(minimum, 1 << (tokens - 1).bit_length())


class JaxLlamaSession(DecoderSession):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "prefill": "the jitted prefill (compiled per shape in warm-up): the prompt's forward filling a fixed-capacity "
                   "float32 KV cache, then np.asarray of the last position's logits, which waits for XLA; the ids' "
                   "range check and int32 cast (numpy) inside",
        "decode": "the jitted decode of one token per sequence (cache donated and written in place; doubled by a "
                  "copy when full), np.asarray of the logits (waits for XLA); the ids' check and int32 cast inside",
    }

    def __init__(self, shape: LlamaShape, weights, functions, jax, precision: str, details: dict):
        self.shape = shape
        self.weights = weights
        self.prefill_fn, self.decode_fn, self.all_logits_fn, self.grow_fn = functions
        self.jax = jax
        self.vocab_size = shape.vocab
        self.executed_precision = precision
        self.details = {**details, "compiled_shapes": []}
        self._compiled: set[tuple] = set()
        self.min_capacity = MIN_CAPACITY
        self.reset()

    def _note_compile(self, key: tuple) -> None:
        if key not in self._compiled:
            self._compiled.add(key)
            self.details["compiled_shapes"] = sorted(self._compiled)

    def reset(self) -> None:
        self.cache = None
        self.position = 0

    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self.checked_ids(tokens).astype(np.int32)

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        tokens = self._check_tokens(tokens)
        n = tokens.shape[1]
        if n >= self.shape.max_positions:
            raise ValueError(f"prompt of {n} tokens leaves no room in {self.shape.max_positions} positions")
        capacity = min(capacity_for(n + 1, self.min_capacity), self.shape.max_positions)
        self._note_compile(("prefill", *tokens.shape, capacity))
        logits, self.cache = self.prefill_fn(self.weights, tokens, capacity=capacity)
        self.position = n
        return np.asarray(logits)

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        if self.cache is None:
            raise RuntimeError("decode() before prefill(): there is no sequence to continue")
        tokens = self._check_tokens(tokens)
        capacity = self.cache[0][0].shape[2]
        if self.position >= capacity:
            if capacity >= self.shape.max_positions:
                raise ValueError(f"the sequence reached the model's {self.shape.max_positions} positions")
            capacity = min(2 * capacity, self.shape.max_positions)
            self.cache = self.grow_fn(self.cache, capacity=capacity)
        self._note_compile(("decode", tokens.shape[0], capacity))
        logits, self.cache = self.decode_fn(self.weights, tokens, self.cache, np.int32(self.position))
        self.position += 1
        return np.asarray(logits)

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(self.all_logits_fn(self.weights, self._check_tokens(tokens)))

    def close(self) -> None:
        self.cache = None
        self.weights = None


def load_jax_llama(model: ModelSpec, precision: str, details: dict) -> JaxLlamaSession:
    """A Llama decoder session; `details` comes from the jax engine (backend, threads) and is extended here."""
    import jax
    import jax.numpy as jnp

    dtype = {"fp32": jnp.float32, "bf16": jnp.bfloat16}[precision]
    shape = read_llama_shape(model.path)
    start = time.perf_counter()
    weights = load_llama_weights(model.path, shape, dtype)
    details = {**details, "compute_dtype": jnp.dtype(dtype).name, "weights_load_s": round(time.perf_counter() - start, 3),
               "kv_cache": f"float32, fixed capacity (power of two >= {MIN_CAPACITY}, doubled when full), donated to decode"}
    return JaxLlamaSession(shape, weights, build_llama(shape, dtype), jax, precision, details)


__all__ = ["LlamaShape", "read_llama_shape", "load_llama_weights", "build_llama", "JaxLlamaSession", "load_jax_llama"]
