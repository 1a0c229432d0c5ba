"""torch-compile int8-static: PyTorch 2 Export (PT2E) post-training quantization for x86, cached as a .pt2 file.

The flow (torchao.quantization.pt2e; torch 2.13 no longer ships torch.ao.quantization.quantize_pt2e):
torch.export of the sentence encoder (batch and sequence dimensions dynamic) -> prepare_pt2e with torchao's
X86InductorQuantizer (observers) -> the calibration inputs (workloads/calibration.py, kept apart from the measured
inputs) run through it one by one -> convert_pt2e (int8 weights, quantize/dequantize pairs around activations)
-> re-exported and saved with torch.export.save. The engine loads that file and hands it to torch.compile with
inductor freezing on: torchao's inductor passes (registered when its quantizer is imported) fold each
dequantize -> linear -> ... pattern into onednn.qlinear_pointwise with a prepacked int8 weight. A pattern they do
not fold stays an fp32 linear on dequantized weights, so what ran is read back from the compiled calls, not from
the converted graph alone (see `int8_kernel_shapes`).

Layers, measured on all-MiniLM-L6-v2 (min cosine vs torch fp32 over the 32 fidelity inputs of corpus / titles at
seed 0, then the worst of both over seeds 3 and 5, each calibrated on its own 24 documents; activations observed
with HistogramObserver; compiled, run through oneDNN):
                                                      with VNNI (AVX-512)        oneDNN capped at AVX2 (no VNNI)
  every Linear (100% of MatMul FLOPs), 8-bit weights  0.9939 / 0.9930; 0.9921    0.9916 / 0.9903; 0.9900
  ... 7-bit weights                                   0.9899 / 0.9908; 0.9897    0.9909 / 0.9913; 0.9897
  ... 7-bit activations (the quantizer's reduce_range) 0.970 (seed 0 corpus, reference math, not compiled)
  FFN down-projections fp32 (67%), 8-bit weights      0.9962 / 0.9951; 0.9945    0.9947 / 0.9945; 0.9927
  ... 7-bit weights                                   0.9940 / 0.9942; 0.9945    0.9940 / 0.9942; 0.9943  <- used
  attention projections only (33%), 8-bit weights     0.9984 / 0.9980; 0.9978    0.9974 / 0.9967; 0.9955
  ... 7-bit weights                                   0.9982 / 0.9980; 0.9975    0.9982 / 0.9980; 0.9975
Without VNNI, oneDNN's u8 x s8 GEMM (gemm:jit on AVX2) adds byte-pair products in int16, which saturate with
full-range weights (2 x 255 x 127 > 32767): the embeddings then drift from the VNNI ones (max |diff| vs the
reference-math model 0.02-0.035 against 0.004-0.015). With weights in [-64, 63] (2 x 255 x 64 < 32767) nothing
saturates and both kernel paths give the same embeddings, as with the ONNX Runtime and OpenVINO int8-static
paths. The quantizer's own reduce_range halves the activations' range instead, which cost far more fidelity.
The FFN down-projections take the GELU output, whose range is widest; they stay fp32.

Caching: the converted program is saved with torch.export.save under a key of the model's files, the attention
implementation, the calibration set's identity, the settings and torch/torchao versions; a cached load reads it
back with torch.export.load (MiniLM, 2 cores: ~1 s, against ~3.5 s to export, calibrate, convert and save), so every
session of a run (throughput workers load their own) runs the same scales. What building it cost is kept with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import platform
import tempfile
import time
import warnings
from collections import Counter
from importlib import metadata
from pathlib import Path

from enginebench.measure.cpu_features import onednn_isa_cap, vnni_available
from enginebench.measure.quantization import WeightMatmul, quantization_record
from enginebench.models.artifacts import artifact_key, cached_artifact
from enginebench.models.int8_layers import is_kept_fp32
from enginebench.workloads.calibration import CalibrationSet

PROGRAM_FILE = "model.int8-static.pt2"
FACTS_FILE = "quantize.json"
WEIGHT_RANGE = (-64, 63)  # 7-bit weights: oneDNN's int16 pair sums cannot saturate without VNNI
FULL_WEIGHT_RANGE = (-128, 127)  # 8-bit weights: `int8_layers=all` where VNNI sums them in int32
# `-o torch-compile.int8_layers=`: which Linear layers become int8. The default keeps the FFN down-projections in
# fp32 with 7-bit weights (0.994 on every CPU); `all` quantizes every Linear, with 8-bit weights where VNNI is
# there (0.992-0.994 in the table above; 7-bit weights there fall to 0.990) and 7-bit without (no int16
# saturation). Its fidelity is measured like every result's, and `tune` drops it below --min-fidelity.
SETTINGS = {
    "flow": "torch.export (batch and sequence length dynamic) -> prepare_pt2e -> calibrate -> convert_pt2e",
    "quantizer": "torchao X86InductorQuantizer, set_module_name_qconfig per Linear",
    "weights": f"int8 per-channel symmetric, range [{WEIGHT_RANGE[0]}, {WEIGHT_RANGE[1]}] (PerChannelMinMaxObserver)",
    "activations": "uint8 per-tensor affine [0, 255], static (HistogramObserver)",
    "fp32_layers": "FFN down-projections: Linear layers with more inputs than outputs",
    "lowering": "torch.compile (inductor, freezing): dequantize -> linear folded into onednn.qlinear_pointwise",
}


def settings(int8_layers: str = "no-ffn-down") -> dict:
    """SETTINGS for a choice of INT8_LAYERS on this CPU (what the artifact is keyed by and the result says)."""
    if int8_layers == "no-ffn-down":
        return SETTINGS
    low, high = weight_range(int8_layers)
    return {**SETTINGS, "weights": f"int8 per-channel symmetric, range [{low}, {high}] (PerChannelMinMaxObserver)",
            "fp32_layers": "none: every Linear"}


def weight_range(int8_layers: str) -> tuple[int, int]:
    """The weights' integer range: 8-bit only for `all` on a CPU (and oneDNN cap) with VNNI."""
    return FULL_WEIGHT_RANGE if int8_layers == "all" and vnni_available(cap=onednn_isa_cap()) else WEIGHT_RANGE
SCHEME = "static w8a8, per-channel int8 weights, per-tensor uint8 activations, X86InductorQuantizer"
CALIBRATION_METHOD = "HistogramObserver (activations), PerChannelMinMaxObserver (weights)"
INT8_KERNEL = "onednn::qlinear_pointwise"
_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def why_not_pt2e() -> str | None:
    """Why PT2E x86 int8 cannot run here (one line), or None. Checked without importing torchao."""
    import importlib.util

    if importlib.util.find_spec("torchao") is None:
        return ("torch-compile int8-static quantizes with torchao's PT2E flow, and torchao is not installed: "
                "pip install 'enginebench[torch]'")
    if platform.machine().lower() not in _X86:
        return (f"torch-compile int8-static lowers to oneDNN x86 int8 kernels (X86InductorQuantizer); this machine "
                f"is {platform.machine()}")
    import torch

    if not torch.backends.mkldnn.is_available():
        return "torch-compile int8-static runs oneDNN int8 kernels, and this torch build has no oneDNN (mkldnn)"
    return None


@contextlib.contextmanager
def quiet_torchao():
    """torchao's import and the quantizer log and warn about things that do not concern a CPU run (CUDA-only
    extensions that fail to load, deprecations); keep them out of the table. transformers imports torchao
    whenever it is installed, so loading the encoder needs this too."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def pt2e():
    """(prepare_pt2e, convert_pt2e, x86_inductor_quantizer module, the inductor pre-grad pass torchao needs).

    Importing the quantizer registers torchao's inductor passes; it also sets inductor's process-wide
    pre_grad_custom_pass, which is put back here and applied only while an int8 program compiles
    (`compile_settings`), so other compiles in the same process are left as they were."""
    import torch._inductor.config as inductor_config

    previous = inductor_config.pre_grad_custom_pass
    with quiet_torchao():
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.inductor_passes.x86 import quant_lift_up
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    inductor_config.pre_grad_custom_pass = previous
    return prepare_pt2e, convert_pt2e, xiq, quant_lift_up


@contextlib.contextmanager
def compile_settings():
    """The inductor settings an int8 program compiles under: freezing (weights become constants, which is
    when the int8 weights are prepacked and the quantized patterns folded) and torchao's pre-grad pass. Its
    lowering warns about an internal tensor copy, which is kept out of the table."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(freezing=True, pre_grad_custom_pass=pt2e()[3]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)
        yield


def quantized_program(model, module, calibration: CalibrationSet, attention: str,
                      int8_layers: str = "no-ffn-down") -> tuple[Path, dict]:
    """The converted (int8) program of `module`, built once per key and cached; (its .pt2 path, details). Details
    hold what building it cost (kept with the artifact, so also when cached)."""
    versions = _versions()
    key = program_key(model, calibration, attention, int8_layers)
    started = time.perf_counter()
    folder, cached = cached_artifact("torch-pt2e-int8-static", key,
                                     lambda out: _quantize(module, out, calibration, model.max_positions,
                                                           int8_layers))
    return folder / PROGRAM_FILE, {
        "int8_cached": cached, "int8_artifact_s": round(time.perf_counter() - started, 3),
        "quantizer": f"torchao.quantization.pt2e X86InductorQuantizer ({versions})",
        "int8_settings": settings(int8_layers),
        "calibration": {**calibration.record(), "method": CALIBRATION_METHOD},
        # seconds spent when the artifact was built: export_s the first torch.export, calibration_s the
        # calibration inputs running through the observed model, quantize_s prepare + calibrate + convert,
        # save_s the re-export and torch.export.save
        "int8_cost": json.loads((folder / FACTS_FILE).read_text()),
        "pt2_path": str(folder / PROGRAM_FILE),
    }


def program_key(model, calibration: CalibrationSet, attention: str, int8_layers: str = "no-ffn-down") -> str:
    """The cache key of a converted program: the model's files, the attention implementation the graph was
    exported with, the calibration inputs, the settings, and the torch and torchao versions."""
    return artifact_key(model.content_hash, "pt2e-x86-int8-static", attention, _versions(), calibration.identity(),
                        str(model.max_positions), repr(sorted(settings(int8_layers).items())))


def _versions() -> str:
    return f"torch {metadata.version('torch')}, torchao {metadata.version('torchao')}"


def load_program(path: Path):
    """The converted program as a GraphModule (what torch.compile is given)."""
    import torch

    pt2e()  # the quantized_decomposed ops and torchao's passes are registered before anything compiles
    with quiet_torchao():
        return torch.export.load(str(path)).module()


def _quantize(module, folder: Path, calibration: CalibrationSet, max_positions: int, int8_layers: str) -> None:
    import torch

    prepare_pt2e, convert_pt2e, xiq, _ = pt2e()
    names = module.input_names
    rows = calibration.batch.feeds(names)
    # two rows: an example of batch 1 would make export specialize the batch dimension to 1
    example = {name: torch.from_numpy(a[:2] if len(a) > 1 else a.repeat(2, axis=0)) for name, a in rows.items()}
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=1, max=max_positions)
    dynamic = {name: {0: batch, 1: seq} for name in names}
    started = time.perf_counter()
    with quiet_torchao():
        graph = torch.export.export(module, (), example, dynamic_shapes=dynamic).module()
        graph.graph.eliminate_dead_code()  # BERT's pooler: its output is unused, and the quantizer trips on it
        graph.recompile()
        exported = time.perf_counter()
        quantizer = xiq.X86InductorQuantizer()
        config = _config(xiq, weight_range(int8_layers))
        for name, layer in module.named_modules():
            if isinstance(layer, torch.nn.Linear) and not is_kept_fp32(layer.in_features, layer.out_features,
                                                                        int8_layers):
                quantizer.set_module_name_qconfig(name, config)
        prepared = prepare_pt2e(graph, quantizer)
        calibrating = time.perf_counter()
        with torch.no_grad():
            for feeds in calibration.feeds(names):
                prepared(**{name: torch.from_numpy(a) for name, a in feeds.items()})
        calibrated = time.perf_counter()
        converted = convert_pt2e(prepared)
        converted_at = time.perf_counter()
        _drop_unused_tensors(converted)
        program = torch.export.export(converted, (), example, dynamic_shapes=dynamic)
        torch.export.save(program, str(folder / PROGRAM_FILE))
    cost = {"export_s": round(exported - started, 3), "calibration_s": round(calibrated - calibrating, 3),
            "quantize_s": round(converted_at - exported, 3), "save_s": round(time.perf_counter() - converted_at, 3),
            "calibration_items": calibration.size}
    (folder / FACTS_FILE).write_text(json.dumps(cost))


def _config(xiq, weights: tuple[int, int] = WEIGHT_RANGE):
    """The quantizer's default x86 config (uint8 per-tensor HistogramObserver activations, int8 per-channel
    weights) with the weights in `weights` (7 bits by default)."""
    config = xiq.get_default_x86_inductor_quantization_config()
    low, high = weights
    return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=low, quant_max=high))


def _drop_unused_tensors(graph) -> None:
    """Delete the float weights that convert_pt2e replaced with int8 ones (export would save them too)."""
    used = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in list(graph.named_parameters()) + list(graph.named_buffers()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, leaf)


# ---------------------------------------------------------------------------------------------------------------
# What runs: the converted graph's linears, and the int8 kernels the compiled program calls

def program_linears(graph) -> tuple[list, dict]:
    """(WeightMatmul list, facts) of a converted program: each aten.linear with its module's name, quantized
    when its weight is an int8 constant dequantized in front of it. Facts: Counters of weight granularity and
    (activation handling, dtype), and the quantized weights' integer range."""
    import torch

    qd = torch.ops.quantized_decomposed
    per_channel = {qd.dequantize_per_channel.default}
    dequantize = per_channel | {qd.dequantize_per_tensor.default, qd.dequantize_per_tensor.tensor}
    layers, facts = [], {"weight_granularity": Counter(), "activations": Counter(), "weight_range": None}
    for node in graph.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default:
            continue
        x, weight = node.args[0], node.args[1]
        stack = list(node.meta.get("nn_module_stack", {}).values())
        name = stack[-1][0] if stack else node.name
        quantized = getattr(weight, "op", None) == "call_function" and weight.target in dequantize
        source = weight.args[0] if quantized else weight
        tensor = _attribute(graph, source.target) if getattr(source, "op", None) == "get_attr" else None
        shape = tuple(tensor.shape) if tensor is not None else tuple(source.meta["val"].shape)
        layers.append(WeightMatmul(name, int(shape[1]), int(shape[0]), quantized))
        if quantized:
            facts["weight_granularity"]["per-channel" if weight.target in per_channel else "per-tensor"] += 1
            static = getattr(x, "op", None) == "call_function" and x.target in dequantize
            facts["activations"][("static", _dtype_name(x.args[-1])) if static else ("none", "fp32")] += 1
            if tensor is not None:
                low, high = int(tensor.min()), int(tensor.max())
                old = facts["weight_range"] or [low, high]
                facts["weight_range"] = [min(old[0], low), max(old[1], high)]
    return layers, facts


def _attribute(graph, target: str):
    """A get_attr node's tensor (its target may be a dotted path into submodules)."""
    found = graph
    for part in target.split("."):
        found = getattr(found, part)
    return found


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def int8_kernel_shapes(call) -> Counter:
    """Run `call()` once under torch's profiler and count the int8 linear kernels it executed, as a Counter of
    (in_features, out_features): read from each onednn::qlinear_pointwise call's input (last dim) and its
    per-channel weight scales (one per output)."""
    from torch.profiler import ProfilerActivity, profile

    with _stderr_muted(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        call()
    found = Counter()
    for event in prof.events():
        if event.name == INT8_KERNEL:
            shapes = event.input_shapes
            found[(int(shapes[0][-1]), int(shapes[4][0]) if shapes[4] else 0)] += 1
    return found


@contextlib.contextmanager
def _stderr_muted():
    """The profiler's C++ side prints a line on stderr (file descriptor 2) at each start and stop."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def executed_layers(layers: list, kernels: Counter) -> tuple[list, int]:
    """The graph's layers with `quantized` true only where an int8 kernel of that shape really ran: (layers,
    how many layers quantized in the graph ran as float). Layers of one shape are interchangeable in the
    FLOP count; when some of them ran float, the last ones of that shape are the ones marked so."""
    left = Counter(kernels)
    out, unfused = [], 0
    for layer in layers:
        shape = (layer.in_features, layer.out_features)
        ran = layer.quantized and left[shape] > 0
        left[shape] -= ran
        unfused += layer.quantized and not ran
        out.append(layer._replace(quantized=ran))
    return out, unfused


def quantization_readback(graph, kernels: Counter, source: str) -> tuple[str, dict, dict]:
    """(executed precision, details["quantization"], details["int8_gemm"]) from the converted graph and the
    int8 kernels that ran."""
    layers, facts = program_linears(graph)
    ran, unfused = executed_layers(layers, kernels)
    extra = {"int8_kernel_calls": sum(kernels.values()), "kernel": INT8_KERNEL}
    if unfused:
        extra["quantized_but_ran_float"] = unfused  # dequantize -> fp32 linear: inductor did not fold it
    low, high = facts["weight_range"] or [0, 0]
    cap = onednn_isa_cap()
    gemm = {"library": "oneDNN", "u8s8": True, "vnni": vnni_available(cap=cap), "onednn_max_cpu_isa": cap,
            "weight_range": [low, high], "saturation_free": max(-low, high) * 255 * 2 <= 32767}
    if not any(m.quantized for m in ran):
        return "fp32", quantization_record("none: no int8 kernel ran", "fp32", "fp32", ran, source, **extra), gemm
    granularity = facts["weight_granularity"].most_common(1)[0][0]
    how, activations = facts["activations"].most_common(1)[0][0]
    scheme = SCHEME if (granularity, how, activations) == ("per-channel", "static", "uint8") else \
        f"static w8a8 ({granularity} int8 weights, {how} {activations} activations), X86InductorQuantizer"
    return "int8-static", quantization_record(scheme, "int8", activations, ran, source, **extra), gemm


__all__ = ["SETTINGS", "settings", "weight_range", "SCHEME", "INT8_KERNEL", "why_not_pt2e",
           "quiet_torchao", "quantized_program", "program_key", "load_program", "compile_settings", "program_linears", "int8_kernel_shapes",
           "executed_layers", "quantization_readback"]
