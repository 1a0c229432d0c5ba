"""tinygrad Llama decoder: the Llama forward in tinygrad Tensors with a preallocated KV cache, prefill and decode
each captured once per shape by TinyJit and replayed.

The cache: per layer one key and one value buffer of `capacity` positions ([batch, kv_heads, capacity,
head_dim], float32), allocated once per (batch, capacity). A decode step writes its key/value at position
`start_pos` and attends over positions 0..start_pos, where start_pos is a bound tinygrad Variable: the kernels
take it as a runtime argument, so the decode step has one shape and is generated, compiled (clang) and
captured once per (batch, capacity), not once per token. The capacity is `context` positions (an engine
option; default the model's positions, at most 1024) and doubles (a copy and a new capture) when a sequence
outgrows it. Prefill always starts a fresh sequence at position 0 and is captured per (batch, prompt length).

TinyJit runs a function's first call as it comes, captures the kernels on the second and replays them from
the third on; the wall time of those first two calls per shape (kernel generation, clang, two runs) is
recorded in details["compiled"], apart from any timed call, and the generate scenario's warm-up holds them.

Precisions: fp32; fp16 (weights and the matmuls' inputs in float16, products accumulated in float32; norms,
rotary embeddings, attention and the cache in float32); int8 in the style of tinygrad's LLaMA example's
QUANTIZE: every weight matrix (the LM head included) as int8 with one float32 scale per output channel
(absmax / 127, rounded), cast and scaled inside the matmul kernel, activations float32 (w8a32). The executed
precision is read back from the dtypes of the Tensors the matmuls use.

Static batching in the decoder server: a batch is padded to the smallest batch size already compiled that
holds it (rows repeated, their logits dropped), so a batch of 3 after warm-ups at 1 and 4 runs as 4 instead of
compiling a new shape while requests wait; decode reads the weights once per step whatever the rows.
"""

from __future__ import annotations

import os
import time

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.engines.jax_llama import read_llama_shape
from enginebench.measure.memory import available_memory_bytes
from enginebench.measure.quantization import WeightMatmul, quantization_record, weights_precision
from enginebench.models.safetensors_shards import iter_tensors, weight_files
from enginebench.models.spec import ModelSpec

DEFAULT_CONTEXT = 1024
DECODER_PRECISIONS = ("fp32", "fp16", "int8")
_BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}  # the matmul weights as held (int8: plus a scale per row)
_MEMORY_HEADROOM = 1.2  # activations, the tensor being converted while loading, allocator slack


def memory_needed(model: ModelSpec, precision: str) -> dict[str, float]:
    """Bytes a session holds, by part: the weights at `precision`, the float32 embedding table looked up on the
    host, and a batch-1 KV cache of the default context."""
    import json
    from pathlib import Path

    config = json.loads((Path(model.path) / "config.json").read_text())
    vocab, hidden, layers = int(config["vocab_size"]), int(config["hidden_size"]), int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_dim = int(config.get("num_key_value_heads") or heads) * int(config.get("head_dim") or hidden // heads)
    context = min(DEFAULT_CONTEXT, int(config.get("max_position_embeddings", 2048)))
    return {"weights": model.params * _BYTES_PER_PARAM[precision], "embedding table": vocab * hidden * 4,
            "KV cache": layers * 2 * kv_dim * context * 4}


def why_not_decoder(model: ModelSpec, precision: str) -> str | None:
    """Unknown precision, or a model that would not fit in the memory available now (the out-of-memory killer
    would end this process or a neighbour)."""
    if precision not in DECODER_PRECISIONS:
        return f"tinygrad runs decoders in {', '.join(DECODER_PRECISIONS)}, not {precision}"
    parts, available = memory_needed(model, precision), available_memory_bytes()
    need = sum(parts.values()) * _MEMORY_HEADROOM
    if available is not None and need > available:
        what = ", ".join(f"{name} {size / 2**30:.1f} GiB" for name, size in parts.items())
        fix = "use a smaller model or free memory" if precision == "int8" else "use int8 or a smaller model"
        return (f"tinygrad {precision} needs ~{need / 2**30:.1f} GiB for {model.name} ({what}, +20%), more than "
                f"the {available / 2**30:.1f} GiB available: {fix}")
    return None


class _Linear:
    """x [..., in] @ W.T: float weights [out, in], or int8 weights with a float32 scale per output channel."""

    def __init__(self, name: str, weight, scale=None):
        self.name, self.weight, self.scale = name, weight, scale

    def __call__(self, x):
        from tinygrad import dtypes

        if self.scale is not None:  # int8: cast in the kernel, scaled per output channel after the dot
            return x.matmul(self.weight.cast(dtypes.float32).T) * self.scale
        if self.weight.dtype != dtypes.float32:  # fp16 inputs and weights, float32 accumulation and output
            return x.cast(self.weight.dtype).matmul(self.weight.T, dtype=dtypes.float32)
        return x.matmul(self.weight.T)

    @property
    def tensors(self):
        return [self.weight] + ([self.scale] if self.scale is not None else [])


def _make_linear(name: str, array: np.ndarray, precision: str) -> _Linear:
    from tinygrad import Tensor, dtypes

    if precision == "int8":
        w = array.astype(np.float32)
        scale = np.abs(w).max(axis=1) / 127.0
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
        return _Linear(name, Tensor(q, dtype=dtypes.int8).realize(), Tensor(scale.astype(np.float32)).realize())
    dtype = dtypes.float16 if precision == "fp16" else dtypes.float32
    return _Linear(name, Tensor(array.astype(np.float16 if precision == "fp16" else np.float32), dtype=dtype).realize())


class TinygradLlama:
    """Weights and the forward; see the module docstring."""

    def __init__(self, shape, folder, precision: str):
        from tinygrad import Tensor

        self.shape, self.precision = shape, precision
        available = set(weight_files(folder))

        def take(*names: str) -> list[np.ndarray]:
            return [array for _, array in iter_tensors(folder, list(names))]

        def norm(name: str):
            return Tensor(take(name)[0].astype(np.float32)).realize()

        self.layers = []
        for i in range(shape.layers):
            p = f"model.layers.{i}."
            self.layers.append({
                "attn_norm": norm(p + "input_layernorm.weight"),
                "qkv": _make_linear(f"{p}self_attn.qkv_proj", np.concatenate(
                    take(*(p + f"self_attn.{x}_proj.weight" for x in "qkv")), axis=0), precision),
                "o": _make_linear(p + "self_attn.o_proj", take(p + "self_attn.o_proj.weight")[0], precision),
                "mlp_norm": norm(p + "post_attention_layernorm.weight"),
                "gate_up": _make_linear(f"{p}mlp.gate_up_proj", np.concatenate(
                    take(p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"), axis=0), precision),
                "down": _make_linear(p + "mlp.down_proj", take(p + "mlp.down_proj.weight")[0], precision),
            })
        (embed,) = take("model.embed_tokens.weight")
        # looked up on the host (numpy rows into the step's input buffer), float32 at every precision: indexing a
        # tinygrad Tensor by a Tensor of ids compares every vocabulary row with every id (a one-hot product over
        # the whole table, 3.6 GFLOP for a 128-token SmolLM2 prompt)
        self.embed = np.ascontiguousarray(embed, dtype=np.float32)
        head = take("lm_head.weight")[0] if "lm_head.weight" in available and not shape.tied else embed
        self.lm_head = _make_linear("lm_head", head, precision)
        self.norm = norm("model.norm.weight")
        hd = shape.head_dim
        inv_freq = (1.0 / (shape.rope_theta ** (np.arange(0, hd, 2, dtype=np.int64).astype(np.float32) / hd)))
        self._inv_freq = inv_freq.astype(np.float32)
        self._rope: dict[int, tuple] = {}

    # -- what the matmuls hold ---------------------------------------------------------------------------------
    def linears(self) -> list[_Linear]:
        return [layer[k] for layer in self.layers for k in ("qkv", "o", "gate_up", "down")] + [self.lm_head]

    def weight_bytes(self) -> int:
        """Bytes one decode step reads: every matmul's weights and scales, the norms (the embedding lookup reads
        a row per token)."""
        tensors = [t for lin in self.linears() for t in lin.tensors]
        tensors += [layer[k] for layer in self.layers for k in ("attn_norm", "mlp_norm")] + [self.norm]
        return int(sum(t.nbytes() for t in tensors))

    # -- the forward -------------------------------------------------------------------------------------------
    def rope_tables(self, capacity: int):
        """cos and sin [capacity, head_dim], float32, as transformers' rotary embedding computes them."""
        from tinygrad import Tensor

        if capacity not in self._rope:
            freqs = np.arange(capacity, dtype=np.float32)[:, None] * self._inv_freq[None]
            angles = np.concatenate([freqs, freqs], axis=-1)
            self._rope[capacity] = (Tensor(np.cos(angles)).realize(), Tensor(np.sin(angles)).realize())
        return self._rope[capacity]

    def _rms_norm(self, x, weight):
        return weight * (x * (x.square().mean(axis=-1, keepdim=True) + self.shape.eps).rsqrt())

    def _rotate(self, x, cos, sin):
        """x [b, heads, n, hd]; cos/sin [n, hd]: rotate-half rotary embedding (GPT-NeoX / transformers)."""
        half = self.shape.head_dim // 2
        rotated = (-x[..., half:]).cat(x[..., :half], dim=-1)
        return x * cos + rotated * sin

    def _attend(self, q, keys, values, mask):
        """q [b, heads, n, hd]; keys/values [b, kv_heads, s, hd]; mask [n, s] additive or None."""
        from tinygrad import dtypes

        b, _, n, hd = q.shape
        kv, group = self.shape.kv_heads, self.shape.heads // self.shape.kv_heads
        q5 = q.reshape(b, kv, group, n, hd)
        scores = q5.matmul(keys.unsqueeze(2).transpose(-1, -2), dtype=dtypes.float32) * (1.0 / float(np.sqrt(hd)))
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(-1).matmul(values.unsqueeze(2))  # [b, kv, group, n, hd]
        return out.reshape(b, self.shape.heads, n, hd).transpose(1, 2).reshape(b, n, self.shape.heads * hd)

    def forward(self, x, start_pos, cache: list | None, capacity: int, last_only: bool):
        """x [b, n, hidden] float32 embeddings of the tokens at positions start_pos..start_pos+n-1 (start_pos an int
        or a bound Variable).

        With a cache, the new keys/values are written at those positions and attention reads positions
        0..start_pos+n-1 from it; without one (cache=None, start_pos 0), attention is over the tokens alone.
        Returns float32 logits [b, vocab] (last_only) or [b, n, vocab]."""
        from tinygrad import Tensor

        s = self.shape
        b, n, _ = x.shape
        hd = s.head_dim
        cos_all, sin_all = self.rope_tables(capacity)
        cos, sin = cos_all[start_pos:start_pos + n], sin_all[start_pos:start_pos + n]
        mask = None
        if n > 1:  # causal over the new tokens; the cached positions before them are all visible
            mask = Tensor.full((n, n), float("-inf")).triu(1)
            if cache is not None and not (isinstance(start_pos, int) and start_pos == 0):
                raise ValueError("a prompt of several tokens starts a fresh sequence (position 0)")
        for i, layer in enumerate(self.layers):
            qkv = layer["qkv"](self._rms_norm(x, layer["attn_norm"]))
            q = qkv[..., :s.heads * hd].reshape(b, n, s.heads, hd).transpose(1, 2)
            k = qkv[..., s.heads * hd:(s.heads + s.kv_heads) * hd].reshape(b, n, s.kv_heads, hd).transpose(1, 2)
            v = qkv[..., (s.heads + s.kv_heads) * hd:].reshape(b, n, s.kv_heads, hd).transpose(1, 2)
            q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
            if cache is None:
                keys, values = k, v
            else:
                k_cache, v_cache = cache[i]
                k_cache[:, :, start_pos:start_pos + n, :].assign(k)
                v_cache[:, :, start_pos:start_pos + n, :].assign(v)
                if n > 1:  # a fresh prompt: its own keys are all there is
                    keys, values = k, v
                else:
                    keys, values = k_cache[:, :, 0:start_pos + 1, :], v_cache[:, :, 0:start_pos + 1, :]
            x = x + layer["o"](self._attend(q, keys, values, mask))
            gate_up = layer["gate_up"](self._rms_norm(x, layer["mlp_norm"]))
            gate, up = gate_up[..., :s.intermediate], gate_up[..., s.intermediate:]
            x = x + layer["down"](gate.silu() * up)
        if last_only:
            x = x[:, -1]
        return self.lm_head(self._rms_norm(x, self.norm))

    def new_cache(self, batch: int, capacity: int) -> list:
        from tinygrad import Tensor

        s = self.shape
        return [tuple(Tensor.zeros(batch, s.kv_heads, capacity, s.head_dim).contiguous().realize() for _ in range(2))
                for _ in range(s.layers)]


class _Shape:
    """One compiled shape: its TinyJit, the input buffer its calls write the ids into, its calls so far, and what
    its first calls cost."""

    def __init__(self, fn, use_jit: bool, embed: np.ndarray, ids_shape: tuple[int, int], record: dict):
        from tinygrad import Tensor, TinyJit

        self.fn = TinyJit(fn) if use_jit else fn
        self.jit = use_jit
        self.embed = embed
        # the tokens' embeddings go into one realized buffer, written in place through numpy: a new Tensor per
        # call would cost a schedule (~10 ms) inside every timed call
        self.x = Tensor.zeros(*ids_shape, embed.shape[1]).contiguous().realize()
        self._x_view = np.frombuffer(self.x.uop.buffer.as_memoryview(force_zero_copy=True),
                                     dtype=np.float32).reshape(*ids_shape, embed.shape[1])
        self.calls = 0
        self.record = record  # details["compiled"][key], updated in place
        record.update(captures=0, first_calls_s=0.0, calls=0)

    def __call__(self, ids: np.ndarray, *args) -> np.ndarray:
        t0 = time.perf_counter()
        captured_before = getattr(self.fn, "captured", None)
        np.take(self.embed, ids, axis=0, out=self._x_view)
        out = self.fn(self.x, *args)
        # the output buffer is the JIT's own, reused by the next call: copied out (zero-copy view, then a copy)
        logits = np.frombuffer(out.uop.buffer.as_memoryview(force_zero_copy=True), dtype=np.float32).reshape(
            out.shape).copy()
        self.calls += 1
        if self.jit and self.fn.captured is not captured_before:
            self.record["captures"] += 1
        if self.calls <= 2:  # the plain first call and the capturing second: kernel generation and clang
            self.record["first_calls_s"] = round(self.record["first_calls_s"] + time.perf_counter() - t0, 4)
        self.record["calls"] = self.calls
        return logits


class TinygradLlamaSession(DecoderSession):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "prefill": "the TinyJit-replayed prefill of the prompt (captured per batch and prompt length in warm-up): "
                   "every layer's keys/values written to the preallocated float32 cache, the last position's "
                   "logits copied out to numpy (waits for the kernels); inside also the ids' check and the numpy "
                   "gather of their embedding rows into the step's input buffer",
        "decode": "the TinyJit-replayed decode step of one token per sequence (captured once per batch and cache "
                  "capacity; the position is a bound Variable, so no per-token compile): its key/value written at "
                  "the position, attention over the cached positions, the logits copied out to numpy; inside also "
                  "the id's check and the numpy gather of its embedding row into the step's input buffer",
    }

    def __init__(self, llama: TinygradLlama, use_jit: bool, context: int, precision: str, details: dict):
        self.llama = llama
        self.use_jit = use_jit
        self.vocab_size = llama.shape.vocab
        self.executed_precision = precision
        self.details = {**details, "compiled": {}}
        self.context = context
        self._caches: dict[tuple[int, int], list] = {}  # (batch, capacity) -> cache
        self._shapes: dict[tuple, _Shape] = {}
        self._variable = None
        self.batch = None  # rows the caller asked for
        self.rows = None  # rows the compiled shape runs (padded)
        self.capacity = context
        self.position = 0

    # -- helpers -----------------------------------------------------------------------------------------------
    def _check_tokens(self, tokens: np.ndarray) -> np.ndarray:
        return self.checked_ids(tokens).astype(np.int32)

    def _rows_for(self, batch: int) -> int:
        """The compiled batch size a batch runs at: the smallest one compiled so far that holds it, else itself."""
        compiled = sorted({key[1] for key in self._shapes if key[0] == "decode" and key[1] >= batch})
        return compiled[0] if compiled else batch

    def _pad(self, tokens: np.ndarray, rows: int) -> np.ndarray:
        if tokens.shape[0] == rows:
            return tokens
        return np.concatenate([tokens, np.repeat(tokens[-1:], rows - tokens.shape[0], axis=0)])

    def _cache(self, rows: int, capacity: int) -> list:
        key = (rows, capacity)
        if key not in self._caches:
            self._caches[key] = self.llama.new_cache(rows, capacity)
        return self._caches[key]

    def _shape(self, key: tuple, fn, ids_shape: tuple[int, int]) -> _Shape:
        if key not in self._shapes:
            name = "/".join(str(k) for k in key)
            self._shapes[key] = _Shape(fn, self.use_jit, self.llama.embed, ids_shape,
                                       self.details["compiled"].setdefault(name, {}))
        return self._shapes[key]

    def _start_pos(self, position: int):
        from tinygrad import Variable

        if self._variable is None or self._variable_capacity != self.capacity:
            self._variable = Variable("start_pos", 0, self.capacity - 1)
            self._variable_capacity = self.capacity
        return self._variable.bind(position)

    # -- the DecoderSession contract ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.position = 0
        self.batch = None

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        tokens = self._check_tokens(tokens)
        batch, n = tokens.shape
        if n >= self.llama.shape.max_positions:
            raise ValueError(f"prompt of {n} tokens leaves no room in {self.llama.shape.max_positions} positions")
        while n >= self.capacity:  # room for the prompt and at least one generated token
            self.capacity = min(2 * self.capacity, self.llama.shape.max_positions)
        rows = self._rows_for(batch)
        if rows != batch:  # counted per generation: which batches ran padded to a compiled size
            padded = self.details.setdefault("padded_batches", {})
            padded[f"{batch}->{rows}"] = padded.get(f"{batch}->{rows}", 0) + 1
        cache, capacity, llama = self._cache(rows, self.capacity), self.capacity, self.llama

        def prefill(x):
            # the cache writes are not inputs of the logits (a prompt attends over its own keys): realized with them
            logits = llama.forward(x, 0, cache, capacity, last_only=True)
            return logits.realize(*(t for pair in cache for t in pair))

        logits = self._shape(("prefill", rows, n, capacity), prefill, (rows, n))(self._pad(tokens, rows))
        self.batch, self.rows, self.position = batch, rows, n
        return logits[:batch]

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        if self.batch is None:
            raise RuntimeError("decode() before prefill(): there is no sequence to continue")
        tokens = self._check_tokens(tokens)
        if tokens.shape != (self.batch, 1):
            raise ValueError(f"decode takes one token per sequence, shaped ({self.batch}, 1), not {tokens.shape}")
        if self.position >= self.capacity:
            self._grow()
        rows, capacity, llama = self.rows, self.capacity, self.llama
        cache = self._cache(rows, capacity)

        def decode(x, start_pos):
            logits = llama.forward(x, start_pos, cache, capacity, last_only=True)
            return logits.realize(*(t for pair in cache for t in pair))

        logits = self._shape(("decode", rows, capacity), decode, (rows, 1))(self._pad(tokens, rows),
                                                                           self._start_pos(self.position))
        self.position += 1
        return logits[:self.batch]

    def _grow(self) -> None:
        """Double the capacity: a new cache holding the old one's positions (a new decode shape to capture)."""
        if self.capacity >= self.llama.shape.max_positions:
            raise ValueError(f"the sequence reached the model's {self.llama.shape.max_positions} positions")
        old, capacity = self._cache(self.rows, self.capacity), min(2 * self.capacity, self.llama.shape.max_positions)
        new = self._cache(self.rows, capacity)
        for (k_old, v_old), (k_new, v_new) in zip(old, new):
            k_new[:, :, :self.capacity, :].assign(k_old).realize()
            v_new[:, :, :self.capacity, :].assign(v_old).realize()
        self.details.setdefault("cache_grown", []).append([self.capacity, capacity])
        self.capacity = capacity

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        from tinygrad import Tensor

        tokens = self._check_tokens(tokens)
        x = Tensor(self.llama.embed[tokens])
        return self.llama.forward(x, 0, None, max(self.capacity, tokens.shape[1]), last_only=False).numpy()

    def close(self) -> None:
        self._shapes.clear()
        self._caches.clear()


def _task_cpu_ticks() -> dict[int, int]:
    """utime + stime of every OS thread of this process, in clock ticks (/proc/self/task/*/stat)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return out


def threads_readback(session: TinygradLlamaSession, min_s: float = 0.5) -> dict:
    """Which OS threads really ran the decode step: per-thread CPU time over replayed decode steps of one token
    (batch 1), after two steps that capture the shape. A thread counts when it used at least 20% of the busiest
    one's CPU time. The sequence starts with decode steps from position 0, not a prefill: no prompt shape is
    compiled for the probe, only the batch-1 decode step every generation uses."""
    session.reset()
    session.batch, session.rows = 1, 1  # a sequence of no tokens yet: decode from position 0
    token = np.zeros((1, 1), dtype=np.int64)
    for _ in range(2):
        token = session.decode(token).argmax(-1)[:, None]
    before, t0, steps = _task_cpu_ticks(), time.perf_counter(), 0
    while (time.perf_counter() - t0 < min_s or steps < 3) and session.position < session.capacity:  # never grows
        token = session.decode(token).argmax(-1)[:, None]
        steps += 1
    after = _task_cpu_ticks()
    used = {tid: after[tid] - before.get(tid, 0) for tid in after}
    busiest = max(used.values()) if used else 0
    busy = sorted((t for t, ticks in used.items() if busiest and ticks >= 0.2 * busiest), key=lambda t: -used[t])
    session.reset()
    ticks = os.sysconf("SC_CLK_TCK")
    return {"threads_used": len(busy) or None,
            "threads_source": f"per-OS-thread CPU time (/proc/self/task) over {steps} replayed batch-1 decode steps "
                              "at load: threads with at least 20% of the busiest one's",
            "threads_cpu_s": [round(used[t] / ticks, 2) for t in busy],
            "threads_probe_wall_s": round(time.perf_counter() - t0, 2)}


def load_tinygrad_llama(model: ModelSpec, precision: str, use_jit: bool, context: int,
                        details: dict) -> TinygradLlamaSession:
    """A Llama decoder session; `details` comes from the tinygrad engine (device, renderer, thread setting)."""
    from tinygrad import dtypes

    reason = why_not_decoder(model, precision)
    if reason:
        raise ValueError(reason)
    shape = read_llama_shape(model.path, engine="tinygrad")
    start = time.perf_counter()
    llama = TinygradLlama(shape, model.path, precision)
    linears = llama.linears()
    dtype_name = {lin.name: np.dtype(lin.weight.dtype.fmt).name for lin in linears}  # int8, float16, float32
    executed = weights_precision(dtype_name.values())
    context = min(context or DEFAULT_CONTEXT, shape.max_positions)
    details = {**details, "weights_load_s": round(time.perf_counter() - start, 3),
               "compute_dtype": {"fp16": "float16 matmul inputs, float32 accumulation"}.get(precision, "float32"),
               "weight_dtypes": {lin.name: dtype_name[lin.name] for lin in linears[:4] + linears[-1:]},
               "weight_bytes": llama.weight_bytes(),
               "executed_precision_source": "dtype of the tinygrad Tensors holding the matmul weights",
               "kv_cache": f"float32, preallocated per (batch, capacity): {context} positions, doubled by a copy when "
                           "full; decode's position a bound Variable (one capture per shape)",
               "context": context, "jit": use_jit}
    if precision == "int8":
        layers = [WeightMatmul(lin.name, int(lin.weight.shape[1]), int(lin.weight.shape[0]),
                               lin.weight.dtype == dtypes.int8) for lin in linears]
        details["quantization"] = quantization_record(
            "tinygrad weight-only int8 (its LLaMA example's QUANTIZE): int8 weights, one float32 scale per output "
            "channel (absmax / 127), cast and scaled inside the matmul kernel",
            weights="int8", activations="float32", layers=layers,
            source="dtypes of the tinygrad Tensors the session's matmuls use")
    session = TinygradLlamaSession(llama, use_jit, context, executed, details)
    session.details.update(threads_readback(session))
    return session


__all__ = ["TinygradLlama", "TinygradLlamaSession", "load_tinygrad_llama", "why_not_decoder",
           "threads_readback", "DECODER_PRECISIONS"]
