"""What CTranslate2 really runs on this CPU: the precision and quantization of a loaded model (shared by the
encoder and decoder sessions), and which int8 GEMM, read back from the library at its first model load.

CTranslate2 logs its CPU configuration once per process (at the first model load, when its log level is
info): the ISA of its own kernels, the GEMM backend per compute type, and whether int8 GEMMs go through the
u8s8 form. With oneDNN or MKL it shifts the int8 activations by +128 into uint8 and calls u8s8s32 GEMM with a
compensation term. Without VNNI (vpdpbusd), that GEMM multiplies byte pairs with vpmaddubsw, whose int16 pair
sums saturate (two products of 255 x 127 exceed 32767): oneDNN's "Nuances of int8 computations" documents it.
The shifted activations sit around 128, so on such CPUs saturation is common and int8 results lose accuracy
(on the tiny test Llama: max |logit error| 2.89 without VNNI against 0.21 with it, the same code and weights).

oneDNN picks its kernels from the CPU, capped by ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA in older releases); a cap
at or below AVX512_CORE (AVX2, AVX512_CORE, ...) rules VNNI out, which is how an AVX2-only machine's int8 path
is reproduced on an AVX-512 VNNI one.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile

from enginebench.measure.cpu_features import onednn_isa_cap, vnni_available
from enginebench.measure.quantization import WeightMatmul, ct2_variables, ct2_weight_matmuls, quantization_record

_CONFIG: dict | None = None
def parse_system_config(log: str) -> dict:
    """CTranslate2's system-config log lines -> {cpu_vendor, ct2_isa, int8_backend, u8s8, ...}."""
    out: dict = {}
    if m := re.search(r"CPU: (\S+) \(", log):
        out["cpu_vendor"] = m.group(1)
    if m := re.search(r"Selected ISA: (\S+)", log):
        out["ct2_isa"] = m.group(1)
    if m := re.search(r"SGEMM backend: (\S+)", log):
        out["fp32_backend"] = m.group(1)
    if m := re.search(r"GEMM_S8 backend: (\S+) \(packed: (\w+), u8s8 preferred: (\w+)\)", log):
        out.update(int8_backend=m.group(1), int8_packed=m.group(2) == "true", u8s8=m.group(3) == "true")
    return out


def load_reading_config(construct):
    """Call `construct()` (a CTranslate2 model constructor); the first time in this process, capture the
    configuration CTranslate2 logs at its first load. Returns the model."""
    global _CONFIG
    if _CONFIG is not None:
        return construct()
    import ctranslate2

    previous = ctranslate2.get_log_level()
    ctranslate2.set_log_level(logging.INFO)
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            model = construct()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            ctranslate2.set_log_level(previous)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
    others = [line for line in text.splitlines() if "[ctranslate2]" not in line or "[info]" not in line]
    if others:  # anything else written to stderr meanwhile is passed on
        os.write(2, ("\n".join(others) + "\n").encode())
    _CONFIG = parse_system_config(text)
    return model


def session_details(compute_type: str) -> dict:
    """What to record with a CTranslate2 result: its kernels' ISA and GEMM backend; for int8, the int8 path
    (and a note the table prints when that path saturates)."""
    config = _CONFIG or {}
    details = {"ct2_isa": config.get("ct2_isa"), "gemm_backend": config.get("fp32_backend")}
    if compute_type.startswith("int8"):
        path = int8_gemm_path()
        details["int8_gemm"] = path
        if "note" in path:
            details["notes"] = [path["note"]]
    return details


def int8_gemm_path() -> dict:
    """What an int8 result ran on: backend, u8s8 form, VNNI, and whether int16 pair sums can saturate."""
    config = dict(_CONFIG or {})
    cap = onednn_isa_cap()
    vnni = vnni_available(cap=cap)
    backend = config.get("int8_backend")
    u8s8 = config.get("u8s8", False)
    saturates = bool(u8s8 and backend in ("DNNL", "MKL") and not vnni)
    path = {**config, "onednn_max_cpu_isa": cap, "vnni": vnni, "int16_saturation": saturates,
            "source": "CTranslate2's system-config log" if _CONFIG else "not logged in this process"}
    if saturates:
        path["note"] = (f"int8 GEMM: {backend} u8s8 without VNNI ({'cap ' + cap if cap else 'CPU lacks it'}): "
                        "vpmaddubsw can saturate its int16 pair sums: expect lower int8 accuracy than with VNNI")
    return path


# CTranslate2 compute types -> our precision names (int8_float32: int8 GEMMs, the rest of the layer in float32)
_COMPUTE_PRECISIONS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int16": "int16", "int8": "int8",
                       "int8_float32": "int8", "int8_float16": "int8", "int8_bfloat16": "int8"}


def ct2_executed_precision(compute_type: str) -> str:
    """The precision a CTranslate2 model really runs, from the compute_type it reports after loading."""
    return _COMPUTE_PRECISIONS.get(compute_type, compute_type)


def ct2_quantization(folder, compute_type: str) -> dict:
    """`details["quantization"]` of a converted CTranslate2 model, from the dtypes of the Linear weights stored
    in its model.bin and the compute type it loaded with (an int8 file loaded as float32 is dequantized)."""
    import struct
    from pathlib import Path

    activations = "int8" if compute_type.startswith("int8") else ct2_executed_precision(compute_type)
    try:
        layers, facts = ct2_weight_matmuls(ct2_variables(Path(folder) / "model.bin"), compute_type)
        source = "dtypes of the Linear weights in the converted model.bin, and the loaded compute_type"
    except (OSError, ValueError, IndexError, struct.error) as e:  # a model.bin format this reader does not know
        layers, facts = [WeightMatmul("every Linear layer", 1, 1, compute_type.startswith("int8"))], None
        source = f"derived from the converter's rule (every Linear weight int8) — model.bin unreadable: {e}"
    if not any(m.quantized for m in layers):
        return quantization_record("none: no Linear weight runs int8", activations, activations, layers, source)
    granularity = facts["weight_granularity"].most_common(1)[0][0] if facts else "per-channel"
    return quantization_record(
        f"dynamic w8a8 ({granularity} int8 weights, per-token dynamic int8 activations)", "int8", "int8", layers,
        source, activations_source="CTranslate2's int8 GEMM quantizes each input row (token) on the fly with its "
                                   "own scale (ops::Quantize); documented, not read back")


__all__ = ["load_reading_config", "session_details", "int8_gemm_path", "parse_system_config",
           "ct2_executed_precision", "ct2_quantization"]
