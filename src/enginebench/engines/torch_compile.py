"""torch.compile (inductor by default) of the same SentenceEncoder module that the `torch` engine runs eagerly.

Shapes are static (dynamic=False): inductor specialises its kernels to each [batch, seq_len], and every new
shape recompiles. load() compiles the shape given by the warmup_batch/warmup_seq options (the default workload's
1 x 128) with warm-up calls, so that compile counts in load time; prepare() compiles any other shape the first
time it sees it, outside timing, and records the seconds in details["compile_s_by_shape"]. No sample ever
includes a compile.

int8-static: PT2E post-training quantization for x86 (models/torch_static_quantize.py: torchao's
X86InductorQuantizer, calibrated on inputs kept apart from the measured ones, cached as a .pt2 program); every
compile of it runs with inductor freezing, which folds its quantized linears into oneDNN int8 kernels. What ran
is read back at each compiled shape by profiling one call: only layers whose int8 kernel was called count as
quantized, and with none the executed precision is fp32 (e.g. backend=aot_eager runs the quantize/dequantize
ops around fp32 linears).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from enginebench.engines.base import Engine, Session
from enginebench.engines.torch_eager import TorchOptions, reduce_precision
from enginebench.engines.torch_readback import torch_threads
from enginebench.errors import UsageError
from enginebench.models.spec import ModelSpec
from enginebench.models.int8_layers import DEFAULT_INT8_LAYERS, INT8_LAYERS
from enginebench.models.torch_static_quantize import (INT8_KERNEL, compile_settings, int8_kernel_shapes, load_program,
                                                      quantization_readback, quantized_program, quiet_torchao,
                                                      why_not_pt2e)
from enginebench.workloads import WorkloadData
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.calibration import calibration_set

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
    # int8-static only: which Linear layers run int8 (models/torch_static_quantize.py); tune tries both
    int8_layers: str = field(default=DEFAULT_INT8_LAYERS, metadata={"choices": INT8_LAYERS, "tune": True,
                                                              "precisions": ("int8-static",)})


class TorchCompileSession(Session):
    def __init__(self, compiled, input_names: list[str], torch, executed_precision: str, details: dict,
                 int8_program=None):
        self.compiled = compiled
        self.input_names = input_names
        self.torch = torch
        self.executed_precision = executed_precision
        self.details = details
        self.compiled_shapes: set[tuple[int, int]] = set()
        # int8-static: the converted program (read back against the kernels that ran) and its compile settings
        self.int8_program = int8_program
        self.int8_kernels = None  # Counter of int8 kernel shapes run, the least over the compiled shapes
        self.compile_settings = contextlib.nullcontext
        if int8_program is not None:
            self.compile_settings = compile_settings

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
        with self.compile_settings():
            for _ in range(_WARMUP_CALLS):
                self.run(prepared)
        self.compiled_shapes.add(tuple(prepared["input_ids"].shape))
        seconds = time.perf_counter() - started
        if self.int8_program is not None:
            self.read_back_int8(prepared)
        return seconds

    def read_back_int8(self, prepared) -> None:
        """Profile one call of a compiled shape; executed precision and quantization record from the int8
        kernels that really ran (the least found over the shapes compiled so far)."""
        kernels = int8_kernel_shapes(lambda: self.run(prepared))
        shape = "x".join(str(n) for n in prepared["input_ids"].shape)
        self.details.setdefault("int8_kernel_calls_by_shape", {})[shape] = sum(kernels.values())
        self.int8_kernels = kernels if self.int8_kernels is None else self.int8_kernels & kernels
        source = (f"converted PT2E program {self.details.get('pt2_path')} (linears and their int8 weights), "
                  f"checked against the {INT8_KERNEL} calls profiled in one call of each compiled shape")
        executed, record, gemm = quantization_readback(self.int8_program, self.int8_kernels, source)
        self.executed_precision = executed
        self.details.update(quantization=record, int8_gemm=gemm)

    def run(self, prepared) -> np.ndarray:
        with self.torch.inference_mode():
            return self.compiled(**prepared).float().numpy()


class TorchCompileEngine(Engine):
    name = "torch-compile"
    prepares = "compiles the model with torch.compile"
    library = "torch"
    requires = ("torch", "transformers")
    extra = "torch"
    precisions = ("fp32", "bf16", "int8-static")
    formats = ("safetensors",)
    Options = TorchCompileOptions
    library_precisions = ("fp16", "int8")
    backend = "inductor: generated C++/OpenMP kernels (gcc) + oneDNN/BLAS for matmuls"
    parallelism = "tensor / pipeline parallel (torch.distributed), FSDP"
    training = "yes"

    @classmethod
    def why_not_precision(cls, precision: str) -> str | None:
        reason = super().why_not_precision(precision)
        if reason is None and precision == "int8-static":
            return why_not_pt2e()
        return reason

    def load(self, model: ModelSpec, precision: str, options: TorchCompileOptions,
             measured: Iterable[WorkloadData] | None = None) -> Session:
        """`measured`: the workloads the session will be measured on, which int8-static's calibration
        inputs are kept apart from (None: the default corpus workload is assumed, and recorded as assumed)."""
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
        with quiet_torchao():  # transformers imports torchao when it is installed, which logs CUDA-only noise
            encoder = load_sentence_encoder(model.path, torch.float32, attention=options.attention)
        if precision == "int8-static":
            module, executed, details = _int8_static(model, encoder, options, measured)
        else:
            module, executed, details = reduce_precision(encoder, precision)
        program = module if precision == "int8-static" else None
        mode = None if options.mode == "default" else options.mode
        compiled = torch.compile(module, mode=mode, backend=options.backend, dynamic=False)
        details = {**details, **torch_threads(torch), "attention": encoder.transformer.config._attn_implementation,
                   "compile": f"torch.compile(backend={options.backend}, mode={options.mode}, dynamic=False"
                              f"{', inductor freezing' if program is not None else ''})"}
        session = TorchCompileSession(compiled, encoder.input_names, torch, executed, details, program)
        warmup = _warmup_batch(options.warmup_batch, options.warmup_seq)
        details["load_compile_s"] = round(session.compile_shape(session.tensors(warmup)), 3)
        return session


def _int8_static(model: ModelSpec, encoder, options: TorchCompileOptions, measured):
    """(the converted int8 program, executed precision until read back, details): calibrated on inputs apart
    from `measured`, cached as a .pt2 file (models/torch_static_quantize.py)."""
    calibration = calibration_set(model.path, measured)
    path, details = quantized_program(model, encoder, calibration, options.attention, options.int8_layers)
    started = time.perf_counter()
    program = load_program(path)
    details.update(int8_program_load_s=round(time.perf_counter() - started, 3),
                   executed_precision_source="the converted program's linears, counted as int8 only where a "
                                             f"{INT8_KERNEL} call of their shape ran (torch.profiler, one "
                                             "call of each compiled shape)")
    return program, "fp32", details


def _warmup_batch(batch: int, seq: int) -> TokenBatch:
    """Token ids of the warm-up shape: their values do not matter to a static-shape compile."""
    ids = np.ones((batch, seq), dtype=np.int64)
    return TokenBatch(ids, np.ones_like(ids), np.zeros_like(ids))
