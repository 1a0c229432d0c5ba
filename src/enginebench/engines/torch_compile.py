"""torch.compile (inductor by default) of the same SentenceEncoder module that the `torch` engine runs eagerly.

Shapes are static (dynamic=False): inductor specialises its kernels to each [batch, seq_len], and every new
shape recompiles. load() compiles the shape given by the warmup_batch/warmup_seq options (the default workload's
1 x 128) with warm-up calls, so that compile counts in load time; prepare() compiles any other shape the first
time it sees it, outside timing, and records the seconds in details["compile_s_by_shape"]. No sample ever
includes a compile.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, Session
from enginebench.engines.torch_eager import TorchOptions, reduce_precision, torch_threads
from enginebench.errors import UsageError
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

_MODES = ("default", "max-autotune-no-cudagraphs")  # the others add CUDA graphs, which a CPU has no use for
_WARMUP_CALLS = 2  # the first call compiles; the second checks no guard fails and triggers a recompile
_RECOMPILE_LIMIT = 64  # dynamo's default (8) would silently fall back to eager after 8 shapes


def _compile_backends() -> list[str]:
    import torch._dynamo

    return torch._dynamo.list_backends(exclude_tags=())


@dataclass(frozen=True)
class TorchCompileOptions(TorchOptions):
    # torch.compile mode; max-autotune-no-cudagraphs is slow to compile
    mode: str = field(default="default", metadata={"choices": _MODES})
    # any torch.compile backend, e.g. inductor, aot_eager, eager (torch is imported only to check an override)
    backend: str = field(default="inductor", metadata={"choices": _compile_backends})
    warmup_batch: int = field(default=1, metadata={"min": 1})  # the shape compiled in load()
    warmup_seq: int = field(default=128, metadata={"min": 1})


class TorchCompileSession(Session):
    def __init__(self, compiled, input_names: list[str], torch, executed_precision: str, details: dict):
        self.compiled = compiled
        self.input_names = input_names
        self.torch = torch
        self.executed_precision = executed_precision
        self.details = details
        self.compiled_shapes: set[tuple[int, int]] = set()

    def tensors(self, batch: TokenBatch) -> dict:
        return {name: self.torch.from_numpy(a) for name, a in batch.feeds(self.input_names).items()}

    def prepare(self, batch: TokenBatch):
        prepared = self.tensors(batch)
        shape = (batch.size, batch.seq_len)
        if shape not in self.compiled_shapes:
            seconds = self.compile_shape(prepared)
            self.details.setdefault("compile_s_by_shape", {})[f"{shape[0]}x{shape[1]}"] = round(seconds, 3)
        return prepared

    def compile_shape(self, prepared) -> float:
        started = time.perf_counter()
        for _ in range(_WARMUP_CALLS):
            self.run(prepared)
        self.compiled_shapes.add(tuple(prepared["input_ids"].shape))
        return time.perf_counter() - started

    def run(self, prepared) -> np.ndarray:
        with self.torch.inference_mode():
            return self.compiled(**prepared).float().numpy()


class TorchCompileEngine(Engine):
    name = "torch-compile"
    library = "torch"
    requires = ("torch", "transformers")
    extra = "torch"
    precisions = ("fp32", "bf16")
    formats = ("safetensors",)
    Options = TorchCompileOptions
    library_precisions = ("fp16", "int8")
    backend = "inductor: generated C++/OpenMP kernels (gcc) + oneDNN/BLAS for matmuls"
    parallelism = "tensor / pipeline parallel (torch.distributed), FSDP"
    training = "yes"

    def load(self, model: ModelSpec, precision: str, options: TorchCompileOptions) -> Session:
        import torch
        import torch._dynamo

        from enginebench.models.torch_encoder import load_sentence_encoder

        if options.mode not in _MODES:
            raise UsageError(f"torch-compile mode {options.mode!r} is unknown: use --option torch-compile.mode= one of {', '.join(_MODES)}")
        if options.backend not in torch._dynamo.list_backends(exclude_tags=()):
            raise UsageError(f"torch-compile backend {options.backend!r} is unknown: use one of "
                             f"{', '.join(torch._dynamo.list_backends())}")
        torch.set_num_threads(options.threads)
        try:
            torch.set_num_interop_threads(options.interop_threads)
        except RuntimeError:
            pass  # can only be set once per process, before any parallel work
        torch._dynamo.config.recompile_limit = _RECOMPILE_LIMIT
        module = load_sentence_encoder(model.path, torch.float32, attention=options.attention)
        module, executed, details = reduce_precision(module, precision)
        mode = None if options.mode == "default" else options.mode
        compiled = torch.compile(module, mode=mode, backend=options.backend, dynamic=False)
        details = {**details, **torch_threads(torch), "attention": module.transformer.config._attn_implementation,
                   "compile": f"torch.compile(backend={options.backend}, mode={options.mode}, dynamic=False)"}
        session = TorchCompileSession(compiled, module.input_names, torch, executed, details)
        warmup = _warmup_batch(options.warmup_batch, options.warmup_seq)
        details["load_compile_s"] = round(session.compile_shape(session.tensors(warmup)), 3)
        return session


def _warmup_batch(batch: int, seq: int) -> TokenBatch:
    """Token ids of the warm-up shape: their values do not matter to a static-shape compile."""
    ids = np.ones((batch, seq), dtype=np.int64)
    return TokenBatch(ids, np.ones_like(ids), np.zeros_like(ids))
