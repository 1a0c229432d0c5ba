"""tinygrad: the BERT encoder forward in tinygrad Tensors, replayed per input shape with TinyJit; Llama decoders
in engines/tinygrad_llama.py (fp32, fp16 and int8 weights, a KV cache with one compiled decode step per shape).

tinygrad's CPU backend compiles its generated kernels with clang (Debian's `clang` package); without it
tinygrad finds "no usable devices". Threads: `threads` sets NUM_CPU_THREADS (environment at import, ContextVar
when a kernel is generated), the most ways tinygrad's heuristic splits a kernel. Measured per OS thread with
tinygrad 0.14, MiniLM's kernels all ran on one worker thread at threads=1 and threads=2 alike, so a session
records threads_used None with a note, and the table shows the thread count as ignored. A decoder session reads
the threads back at load instead (per-OS-thread CPU time over replayed decode steps, tinygrad_llama.threads_readback).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.tinygrad_kernels import TinygradKernels
from enginebench.engines.tinygrad_llama import load_tinygrad_llama, why_not_decoder
from enginebench.measure.quantization import weights_precision
from enginebench.models.bert_weights import load_bert_weights, read_bert_config
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

# TinyJit captures the kernels on its second call and replays them from the third on
_JIT_WARMUP_CALLS = 3


@dataclass(frozen=True)
class TinygradOptions(EngineOptions):
    jit: bool = True  # replay captured kernels (TinyJit); false runs the lazy graph on every call
    # decoders: KV cache positions allocated up front (0: the model's positions, at most 1024); doubled when full
    context: int = field(default=0, metadata={"min": 0})


def _activation(name: str):
    return {
        "gelu_erf": lambda x: 0.5 * x * (1 + (x / math.sqrt(2)).erf()),
        "gelu_tanh": lambda x: x.gelu(),
        "relu": lambda x: x.relu(),
        "silu": lambda x: x.silu(),
    }[name]


def build_forward(config, weights):
    """(input_ids, attention_mask, token_type_ids) int32 Tensors -> L2-normalised mean-pooled embeddings."""
    from tinygrad import dtypes

    act = _activation(config.activation)
    eps, heads, head_dim = config.layer_norm_eps, config.num_heads, config.head_dim
    emb = weights["embeddings"]

    def layer_norm(x, w, b):
        return x.layernorm(axis=-1, eps=eps) * w + b

    def forward(input_ids, attention_mask, token_type_ids):
        batch, seq = input_ids.shape
        x = emb["word"][input_ids] + emb["token_type"][token_type_ids] + emb["position"][:seq].unsqueeze(0)
        x = layer_norm(x, emb["ln_w"], emb["ln_b"])
        keep = attention_mask.reshape(batch, 1, 1, seq).cast(dtypes.bool)

        def split(t):
            return t.reshape(batch, seq, heads, head_dim).transpose(1, 2)

        for layer in weights["layers"]:
            q = split(x.matmul(layer["q_w"]) + layer["q_b"])
            k = split(x.matmul(layer["k_w"]) + layer["k_b"])
            v = split(x.matmul(layer["v_w"]) + layer["v_b"])
            context = q.scaled_dot_product_attention(k, v, attn_mask=keep)
            context = context.transpose(1, 2).reshape(batch, seq, heads * head_dim)
            x = layer_norm(context.matmul(layer["o_w"]) + layer["o_b"] + x, layer["ln1_w"], layer["ln1_b"])
            h = act(x.matmul(layer["up_w"]) + layer["up_b"])
            x = layer_norm(h.matmul(layer["down_w"]) + layer["down_b"] + x, layer["ln2_w"], layer["ln2_b"])

        mask = attention_mask.unsqueeze(-1).cast(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).maximum(1e-9)
        norm = (pooled * pooled).sum(1, keepdim=True).sqrt()
        return (pooled / norm.maximum(1e-12)).cast(dtypes.float32).realize()

    return forward


class TinygradSession(Session):
    def __init__(self, forward, use_jit: bool, precision: str, details: dict):
        self.forward = forward
        self.use_jit = use_jit
        self.executed_precision = precision
        self.details = details
        self._jits: dict[tuple[int, int], object] = {}

    def prepare(self, batch: TokenBatch):
        from tinygrad import Tensor, TinyJit, dtypes

        inputs = tuple(Tensor(a.astype(np.int32), dtype=dtypes.int32).realize() for a in
                       (batch.input_ids, batch.attention_mask, batch.token_type_ids))
        shape = batch.input_ids.shape
        if shape not in self._jits:  # kernels are generated and compiled per shape: here, never in a timed run
            fn = TinyJit(self.forward) if self.use_jit else self.forward
            for _ in range(_JIT_WARMUP_CALLS if self.use_jit else 1):
                fn(*inputs).numpy()
            self._jits[shape] = fn
            self.details["compiled_shapes"] = sorted(self._jits)
        return self._jits[shape], inputs

    def run(self, prepared) -> np.ndarray:
        fn, inputs = prepared
        return fn(*inputs).numpy()


class TinygradEngine(Engine):
    name = "tinygrad"
    op_kernels = TinygradKernels
    prepares = "compiles its kernels with clang"
    library = "tinygrad"
    requires = ("tinygrad", "safetensors")
    extra = "tinygrad"
    precisions = ("fp32", "fp16", "int8")  # int8: decoders only (weight-only, as tinygrad's LLaMA QUANTIZE)
    formats = ("safetensors",)
    Options = TinygradOptions
    model_kinds = ("encoder", "decoder")
    library_precisions = ("bf16",)
    backend = "its own generated kernels (C compiled by clang on CPU; CUDA, Metal, AMD, OpenCL, WebGPU)"
    parallelism = "yes (Tensor.shard across devices)"
    training = "yes (autograd; tinygrad.nn.optim)"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        from tinygrad import Device

        return (Device.DEFAULT.lower(),)

    @classmethod
    def probe_backend(cls) -> str:
        """The default device's renderer and compiler, as tinygrad picks them here."""
        from tinygrad import Device

        device = Device[Device.DEFAULT]
        compiler = type(getattr(device, "compiler", None)).__name__
        return f"{cls.backend}; here {Device.DEFAULT}: {type(device.renderer).__name__}, {compiler}"

    @classmethod
    def why_not(cls, model: ModelSpec, precision: str, options: dict[str, str] | None = None) -> str | None:
        if model.kind == "decoder":
            return cls.why_not_model(model) or why_not_decoder(model, precision)
        if precision == "int8":
            return "tinygrad int8 runs decoders only (weight-only int8 for Llama models); use fp32 or fp16"
        return super().why_not(model, precision)

    def load(self, model: ModelSpec, precision: str, options: TinygradOptions) -> Session:
        os.environ.setdefault("NUM_CPU_THREADS", str(options.threads))  # read if tinygrad is imported now
        from tinygrad import Device, Tensor, dtypes, helpers

        helpers.NUM_CPU_THREADS.value = options.threads  # read whenever a kernel is generated
        if model.kind == "decoder":
            device = Device[Device.DEFAULT]
            return load_tinygrad_llama(model, precision, options.jit, options.context, {
                "device": Device.DEFAULT, "renderer": type(device.renderer).__name__,
                "num_cpu_threads": helpers.NUM_CPU_THREADS.value})
        reason = self.why_not(model, precision)
        if reason:
            raise ValueError(reason)
        config = read_bert_config(model.path)
        dtype = {"fp32": dtypes.float32, "fp16": dtypes.float16}[precision]
        host = load_bert_weights(model.path, config)
        weights = {
            "embeddings": {k: Tensor(v).cast(dtype).realize() for k, v in host["embeddings"].items()},
            "layers": [{k: Tensor(v).cast(dtype).realize() for k, v in layer.items()} for layer in host["layers"]],
        }
        device = Device[Device.DEFAULT]
        details = {
            "device": Device.DEFAULT,
            "renderer": type(device.renderer).__name__,
            "num_cpu_threads": helpers.NUM_CPU_THREADS.value,
            "jit": options.jit,
            "compute_dtype": str(dtype),
            "threads_used": None,
            "threads_note": "tinygrad's CPU backend ignores the thread option",
        }
        executed = weights_precision(t.dtype.name for layer in weights["layers"] for t in layer.values()
                                     if len(t.shape) == 2)
        details["executed_precision_source"] = "dtype of the tinygrad Tensors holding the matmul weights"
        return TinygradSession(build_forward(config, weights), options.jit, executed, details)
