"""Engines enginebench knows of but cannot run on this machine: they keep a row in the feature table with
the reason, so a reader sees what was left out and why rather than a silently shorter table."""

from __future__ import annotations

import os
import shutil

from enginebench.engines.base import EngineInfo
from enginebench.engines.features import precision_bits


def _nvidia_gpu() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def _tensorrt_reason() -> str:
    if not _nvidia_gpu():
        return "needs an NVIDIA GPU with its CUDA driver; this machine has none"
    return "not wired into enginebench yet (an NVIDIA GPU is present: pip install tensorrt)"


def unavailable_engines() -> list[EngineInfo]:
    rust = "a Rust crate: no Python package to install from the registries"
    return [
        EngineInfo(
            name="candle", library="candle-core", version=None, install="cargo add candle-core",
            precisions=(), devices=(), formats=("safetensors", "gguf", "onnx (candle-onnx)"),
            notes=rust,
            bits=precision_bits(("fp32", "fp16", "bf16", "q8_0", "q6_k", "q4_0", "q3_k", "q2_k")),
            backend="gemm crate / MKL / Accelerate on CPU, CUDA and Metal kernels",
            parallelism="tensor parallel over GPUs (NCCL)", training="yes (autograd, candle-nn optimizers)",
            available=False),
        EngineInfo(
            name="burn", library="burn", version=None, install="cargo add burn",
            precisions=(), devices=(), formats=("burn records", "onnx (burn-import)", "safetensors", "pytorch"),
            notes=rust,
            bits=precision_bits(("fp32", "fp16", "bf16", "int8")),
            backend="ndarray, libtorch, wgpu, CubeCL CUDA/ROCm, candle backends",
            parallelism="data parallel across devices", training="yes (autodiff backend, optimizers)",
            available=False),
        EngineInfo(
            name="tensorrt", library="tensorrt", version=None, install="pip install tensorrt",
            precisions=(), devices=(), formats=("onnx", "tensorrt engine plan"),
            notes=_tensorrt_reason(),
            bits=precision_bits(("fp32", "fp16", "bf16", "fp8", "int8", "int4")),
            backend="cuBLAS / cuDNN and its own fused kernels",
            parallelism="tensor and pipeline parallel (TensorRT-LLM)", training="no",
            available=False),
    ]


__all__ = ["unavailable_engines"]
