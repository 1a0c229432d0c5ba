"""OpenVINO on the CPU, from the cached ONNX export.

OpenVINO's CPU plugin runs bf16 by default wherever the CPU has bf16 instructions, so every precision sets
INFERENCE_PRECISION_HINT explicitly and the executed precision is read back from the compiled model.
int8 is weight compression (NNCF INT8_ASYM, per-channel u8 weights with zero points), cached as IR. What the CPU
plugin then computes depends on DYNAMIC_QUANTIZATION_GROUP_SIZE (`-o openvino.dynamic_quantization`; its default is
32 in OpenVINO 2026): where the CPU has VNNI it quantizes the activations of every compressed MatMul on the fly,
in groups of that many inputs, and runs integer products (w8a8); with 0, or without VNNI, it widens the weights and
computes in fp32 (w8a32). Neither the runtime graph (runtimePrecision u8 either way) nor the kernel names tell the
two apart, so the load compares one call's outputs with the same IR compiled with dynamic quantization off:
equal within fp32 rounding means the activations stayed fp32 (details.dynamic_quantization).
int8-static is NNCF post-training quantization (`nncf.quantize`, transformer model type: SmoothQuant and
per-tensor activation FakeQuantize calibrated on inputs kept apart from the measured ones), also cached as IR.
Which MatMuls then really run in int8 is read from the compiled model's runtime graph (each executed node's
runtimePrecision and kernel), not from the FakeQuantize nodes NNCF inserted.

int8-static settings, measured on all-MiniLM-L6-v2 (min cosine vs torch fp32, 24 calibration documents; corpus
seed 0, then the worst of corpus and titles over seeds 3 and 5), with VNNI / oneDNN capped at AVX2 (no VNNI):
  nncf.quantize, transformer model type (every weight MatMul)          0.9962 / 0.9926
  the same with 7-bit weights everywhere (OverflowFix.ENABLE)           0.9890 / 0.9892
  FFN down-projections ignored (67% of MatMul FLOPs)                    0.9979 / 0.9955; seeds 3, 5: 0.989 / 0.987
  ... and SmoothQuant alpha 0.5 (default 0.15)                          seeds 3, 5: 0.9954 / 0.977
  ... and 7-bit weights everywhere                                      0.9981 / 0.9981; seeds 3, 5: 0.9947 / 0.9947
                                                                        <- used
Without VNNI, oneDNN adds u8 x s8 byte-pair products in int16 (vpmaddubsw), which saturate once weights use the
full int8 range (2 x 255 x 127 > 32767); SmoothQuant moves activation outliers into the weights, which makes that
worse. With 7-bit weights (2 x 255 x 64 < 32767) nothing saturates, so both kernel paths give the same
embeddings. The down-projections' input (the GELU output) has the widest range; they stay fp32.
`details.int8_gemm` records the kernels that ran and the weights' integer range.
A session runs one synchronous infer request: more than one stream only pays off with requests in flight
together (the throughput scenario's parallel callers), not within one call.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.openvino_kernels import OpenVinoKernels
from enginebench.errors import UsageError
from enginebench.measure.cpu_features import current, onednn_isa_cap, vnni_available
from enginebench.measure.openvino_runtime import CPU_NEEDS, INTEGER, is_product, node_runs
from enginebench.measure.quantization import WeightMatmul, onnx_outline, quantization_record
from enginebench.models.artifacts import artifact_key, cached_artifact
from enginebench.models.int8_layers import DEFAULT_INT8_LAYERS, INT8_LAYERS
from enginebench.models.onnx_export import onnx_encoder, onnx_key
from enginebench.models.onnx_quantize import kept_fp32
from enginebench.models.spec import ModelSpec
from enginebench.workloads import WorkloadData
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.calibration import calibration_set

_HINTS = ("LATENCY", "THROUGHPUT")
# DYNAMIC_QUANTIZATION_GROUP_SIZE: the plugin's default, off (0), or a group size (a multiple of 16, its SIMD width)
DYNAMIC_QUANTIZATION = ("auto", "off", "16", "32", "64", "128", "256", "384")
# the compute precision each requested precision asks the CPU plugin for
_COMPUTE = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8-static": "f32"}
_OV_TYPE_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


@dataclass(frozen=True)
class OpenVinoOptions(EngineOptions):
    hint: str = field(default="LATENCY", metadata={"choices": _HINTS})  # PERFORMANCE_HINT
    num_streams: int = field(default=0, metadata={"min": 0})  # NUM_STREAMS; 0 lets the performance hint choose
    # ENABLE_CPU_PINNING. auto: pin only a session whose threads cover every CPU this process may use. OpenVINO
    # pins each process's threads from the first core, so two single-threaded workers pinned shared one core
    # (MiniLM b8: 120 ms a call each, against 57 ms unpinned or alone)
    pinning: str = field(default="auto", metadata={"choices": ("auto", "true", "false")})
    # int8 only: activations of the compressed MatMuls quantized on the fly (see the module docstring); tune
    # tries the default, off (fp32 products: slower, closer to fp32) and a coarser group
    dynamic_quantization: str = field(default="auto", metadata={"choices": DYNAMIC_QUANTIZATION,
                                                                "tune": ("auto", "off", "128"), "precisions": ("int8",)})
    # static: the model reshaped to each input shape and compiled for it (at the shape's first prepare, before
    # timing), so the plugin plans its memory and kernels for that shape: int8-static every Linear, batch 32 x 128,
    # 195 items/s against 187 (A/B interleaved, a Zen 4 EPYC, 2026-12-07). Each new shape compiles anew (dynamic
    # padding: one per width)
    shapes: str = field(default="dynamic", metadata={"choices": ("dynamic", "static"), "tune": True})
    # int8-static only: which MatMuls NNCF quantizes (all: the FFN down-projections too); tune tries both
    int8_layers: str = field(default=DEFAULT_INT8_LAYERS, metadata={"choices": INT8_LAYERS, "tune": True,
                                                              "precisions": ("int8-static",)})


class OpenVinoSession(Session):
    """`compile_for`: under `shapes=static`, compiles the model reshaped to one input shape; each shape is
    compiled at its first prepare (before timing) and its request kept."""

    def __init__(self, compiled, details: dict, executed_precision: str,
                 compile_for: Callable[[tuple[int, ...]], Any] | None = None):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.executed_precision = executed_precision
        self.details = details
        self._compile_for = compile_for
        self._requests_by_shape: dict[tuple[int, ...], Any] = {}

    def prepare(self, batch: TokenBatch):
        feeds = batch.feeds(self.input_names)
        if self._compile_for is None:
            return self.request, feeds
        shape = next(iter(feeds.values())).shape
        if shape not in self._requests_by_shape:
            self._requests_by_shape[shape] = self._compile_for(shape).create_infer_request()
        return self._requests_by_shape[shape], feeds

    def run(self, prepared) -> np.ndarray:
        request, feeds = prepared
        # the result views the request's output tensor, which the next call overwrites
        return np.array(request.infer(feeds)[0], copy=True)


class OpenVinoEngine(Engine):
    name = "openvino"
    op_kernels = OpenVinoKernels
    prepares = "exports the model to ONNX and compiles it"
    library = "openvino"
    requires = ("openvino", "onnx", "torch", "transformers")  # torch exports the ONNX file
    extra = "openvino"
    precisions = ("fp32", "bf16", "int8", "int8-static")
    formats = ("onnx", "openvino-ir")
    Options = OpenVinoOptions
    library_precisions = ("fp16", "int4")
    cpu_needs = CPU_NEEDS  # without them OpenVINO runs bf16 as f32
    backend = "oneDNN + its own JIT kernels (CPU plugin)"
    parallelism = "no (streams run requests in parallel on one device)"
    training = "no"
    cuts_graph = True  # loads any ONNX graph: `run --until NODE` and `blocks`

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import openvino as ov

        return tuple(device.lower() for device in ov.Core().available_devices)

    @classmethod
    def why_not_precision(cls, precision: str) -> str | None:
        reason = super().why_not_precision(precision)
        if reason is None and precision.startswith("int8") and importlib.util.find_spec("nncf") is None:
            return f"openvino {precision} quantizes with nncf, which is not installed: pip install 'enginebench[openvino]'"
        if reason is None and precision == "int8":
            reason = _compressed_kernels_capped()
        if reason is None and precision == "bf16":
            import openvino as ov

            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in capabilities:
                return f"this CPU has no bf16 support in OpenVINO (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
        return reason

    def load(self, model: ModelSpec, precision: str, options: OpenVinoOptions,
             measured: Iterable[WorkloadData] | None = None) -> Session:
        """`measured`: the workloads the session will be measured on, which int8-static's calibration
        inputs are kept apart from (None: the default corpus workload is assumed, and recorded as assumed)."""
        import openvino as ov

        if options.hint.upper() not in _HINTS:
            raise UsageError(f"openvino hint {options.hint!r} is unknown: use --option openvino.hint=LATENCY or THROUGHPUT")
        path, details = onnx_encoder(model)
        if precision == "int8":
            path, compress = _compressed_ir(model, path)
            details = {**details, **compress}
        if precision == "int8-static":
            path, quantized = _static_ir(model, path, measured, options.int8_layers)
            details = {**details, **quantized}
        core = ov.Core()
        ov_model = core.read_model(str(path))
        layers, facts = openvino_weight_matmuls(ov_model)  # the weights as the plugin receives them
        config = _config(options, precision)
        compiled = core.compile_model(ov_model, "CPU", config)
        computed = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", ...
        executed = _OV_TYPE_NAMES.get(computed, computed)
        if any(m.quantized for m in layers):  # compressed weights really are in the model
            executed = f"int8-weights/{executed}"
        if precision == "int8":
            dynamic = _dynamic_quantization(core, ov_model, compiled, config, options)
            details["dynamic_quantization"] = dynamic
            details["quantization"] = _quantization_record(layers, facts, executed.rsplit("/", 1)[-1], path,
                                                           dynamic["group_size"] if dynamic["applied"] else 0)
            if dynamic["applied"] and any(m.quantized for m in layers):
                executed = "int8"
        if precision == "int8-static":
            layers, kernels, attention = _runtime_int8(compiled, layers, facts["activation_matmuls"],
                                                       min(128, model.max_positions))
            details["quantization"] = _static_record(layers, facts, kernels, path, attention)
            details["int8_gemm"] = {**_int8_gemm(kernels), "weight_range": _int8_weight_range(ov_model)}
            executed = "int8-static" if any(m.quantized for m in layers) else _OV_TYPE_NAMES.get(computed, computed)
        threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        details.update({
            "executed_precision_source": "the compiled model's INFERENCE_PRECISION_HINT; int8-weights when MatMul "
                                         "weights in the model read are integer constants; int8 when their "
                                         "activations are quantized too (details.dynamic_quantization); "
                                         "int8-static when the runtime graph runs weight MatMuls on int8 inputs",
            "threads_used": threads, "threads_source": "compiled model's INFERENCE_NUM_THREADS",
            "inference_precision": computed, "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),  # OpenVINO caps streams at the threads
            "num_streams_requested": options.num_streams or "auto",
            "cpu_pinning": bool(compiled.get_property("ENABLE_CPU_PINNING")),  # read back
            "cpu_pinning_requested": options.pinning,
            "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
            "shapes": options.shapes,
        })
        return OpenVinoSession(compiled, details, executed,
                               _static_compiler(core, ov_model, config) if options.shapes == "static" else None)

    def load_onnx_graph(self, path, options: OpenVinoOptions):
        """Any ONNX file (a block of the model, for `enginebench blocks`), compiled at fp32."""
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", _config(options, "fp32"))
        request = compiled.create_infer_request()
        outputs = compiled.outputs

        def run(feeds):
            result = request.infer(feeds)
            return [np.array(result[port], copy=True) for port in outputs]  # the next call overwrites them

        return run


def _static_compiler(core, ov_model, config: dict) -> Callable[[tuple[int, ...]], Any]:
    """The model compiled for one input shape (every input takes the same [batch, tokens] shape)."""
    def compile_for(shape: tuple[int, ...]):
        shaped = ov_model.clone()
        shaped.reshape({port.get_any_name(): list(shape) for port in shaped.inputs})
        return core.compile_model(shaped, "CPU", config)

    return compile_for


# ops that carry a weight from its Constant to the MatMul: NNCF's decompression (Convert, Subtract zero point,
# Multiply scale) and layout changes (Reshape for group-wise scales, Transpose)
_DATA_PATH = ("Convert", "Reshape", "Transpose", "Unsqueeze", "Squeeze")
_DECOMPRESSION = ("Multiply", "Subtract")


def _weight_constants(output):
    """The Constant nodes a MatMul input is computed from through decompression ops only, or None when the
    input depends on anything else (an activation). The largest constant is the weight."""
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        return [node]
    if kind in _DATA_PATH:
        return _weight_constants(node.input(0).get_source_output())
    if kind in _DECOMPRESSION:
        found = []
        for port in node.inputs():
            constants = _weight_constants(port.get_source_output())
            if constants is None:
                return None
            found += constants + ([node] if kind == "Subtract" else [])
        return found
    return None


def openvino_weight_matmuls(ov_model):
    """(WeightMatmul list, facts) of an ov.Model: MatMuls with a constant weight, quantized when NNCF stored
    that weight as an integer Constant (u8/i8/u4/i4/nf4) decompressed in front of the MatMul. Facts: Counters
    of the compressed weights' element types and granularity, zero points, int8 embedding tables, and
    "activation_matmuls", {name: both operands fake-quantized} of the MatMuls of two activations (attention's
    Q·Kᵀ and P·V: NNCF's transformer preset quantizes Q·Kᵀ and leaves the softmax's output to P·V in float)."""
    from collections import Counter

    layers = []
    facts = {"weights": Counter(), "weight_granularity": Counter(), "zero_points": 0, "gathers_compressed": 0,
             "activation_matmuls": {}}
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Gather":
            constants = _weight_constants(op.input(0).get_source_output())
            constants = [c for c in constants or () if c.get_type_name() == "Constant"]
            if constants and max(constants, key=_shape_size).get_element_type().is_integral():
                facts["gathers_compressed"] += 1
            continue
        if kind != "MatMul":
            continue
        for index in (1, 0):
            found = _weight_constants(op.input(index).get_source_output())
            if found is None:
                continue
            constants = [c for c in found if c.get_type_name() == "Constant"]
            weight = max(constants, key=_shape_size)
            shape = [d.get_length() for d in op.input(index).get_partial_shape()]
            if len(shape) != 2:
                break
            transposed = op.get_attributes().get("transpose_b" if index == 1 else "transpose_a", False)
            rows, cols = shape if (index == 1) != transposed else shape[::-1]
            quantized = weight.get_element_type().is_integral()
            layers.append(WeightMatmul(op.get_friendly_name(), rows, cols, quantized))
            if quantized:
                facts["weights"][weight.get_element_type().get_type_name()] += 1
                scales = [c for c in constants if c is not weight and _shape_size(c) > 1]
                facts["weight_granularity"]["group-wise" if len(weight.get_output_partial_shape(0)) > 2 else
                                            "per-channel" if scales else "per-tensor"] += 1
                facts["zero_points"] += any(c.get_type_name() == "Subtract" for c in found)
            break
        else:  # neither operand is a weight
            facts["activation_matmuls"][op.get_friendly_name()] = all(
                _fake_quantized(op.input(index).get_source_output()) for index in (0, 1))
    return layers, facts


def _shape_size(node) -> int:
    size = 1
    for d in node.get_output_partial_shape(0):
        size *= d.get_length()
    return size


def _quantization_record(layers, facts, compute: str, path, dynamic_group: int) -> dict:
    """`dynamic_group`: the group size the plugin quantized the activations in, 0 where they stayed float."""
    source = f"MatMul weight constants of the OpenVINO model compiled ({Path(path).name})"
    if not any(m.quantized for m in layers):
        return quantization_record("none: no MatMul weight is compressed", "fp32", compute, layers, source)
    stored = facts["weights"].most_common(1)[0][0]  # u8 for INT8_ASYM
    bits = "".join(ch for ch in stored if ch.isdigit()) or "8"
    granularity = facts["weight_granularity"].most_common(1)[0][0]
    zero_points = "with zero points" if facts["zero_points"] else "symmetric"
    weights = f"{granularity} {stored} weights {zero_points}"
    if dynamic_group:
        scheme = (f"dynamic w{bits}a8 ({weights}; activations quantized to 8 bits on the fly, one scale per "
                  f"{dynamic_group} inputs: OpenVINO's DYNAMIC_QUANTIZATION_GROUP_SIZE)")
        source += "; activations: the outputs' comparison in details.dynamic_quantization"
        return quantization_record(scheme, f"int{bits}", "int8", layers, source,
                                   embedding_tables_compressed=facts["gathers_compressed"])
    scheme = f"weights-only int{bits} ({weights}), {compute} compute"
    return quantization_record(scheme, f"int{bits}", compute, layers, source,
                               embedding_tables_compressed=facts["gathers_compressed"])


def _dynamic_quantization(core, ov_model, compiled, config: dict, options: OpenVinoOptions) -> dict:
    """Whether the plugin quantized the compressed MatMuls' activations: the group size read back from the
    compiled model and, where it is not 0, one call of the session against the same model compiled with
    dynamic quantization off. The plugin decides per node and reports it nowhere, so a difference counts every
    compressed MatMul as dynamically quantized (on MiniLM every one qualifies: per-channel u8 weights)."""
    group = int(compiled.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    record = {"requested": options.dynamic_quantization, "group_size": group, "applied": False,
              "source": "the compiled model's DYNAMIC_QUANTIZATION_GROUP_SIZE"}
    if group == 0:
        return record
    twin = core.compile_model(ov_model, "CPU", {**config, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0})
    feeds = _probe_feeds(compiled)
    ours, plain = (np.asarray(c(feeds)[c.output(0)]) for c in (compiled, twin))
    difference = float(np.max(np.abs(ours - plain)))
    # fp32 kernels that only reorder sums differ by ~1e-7 of the output's scale; 8-bit activations by ~1e-3
    record.update(applied=difference > 1e-5 * float(np.max(np.abs(plain))), max_abs_difference=difference,
                  source=record["source"] + "; applied: one call (batch 1 x 32 tokens) differs from the same model "
                                            "compiled with DYNAMIC_QUANTIZATION_GROUP_SIZE=0")
    return record


def _probe_feeds(compiled) -> dict:
    tokens = 32
    ids = 1000 + (np.arange(tokens, dtype=np.int64) * 7919) % 1000  # varied ids any vocabulary of 2,000 holds
    feeds = {}
    for port in compiled.inputs:
        name = port.get_any_name()
        feeds[name] = (ids if name == "input_ids" else np.ones(tokens, dtype=np.int64)
                       if name == "attention_mask" else np.zeros(tokens, dtype=np.int64))[None, :]
    return feeds


def _compressed_kernels_capped() -> str | None:
    """Why int8 cannot run under this process's oneDNN cap: capped at AVX2 on an AVX-512 CPU (as
    ENGINEBENCH_CPU_FEATURES=avx2 does), the plugin lays out the compressed weights for the CPU it reads and its
    oneDNN then has no kernel for them ("could not create a primitive descriptor", OpenVINO 2026.4); AVX2_VNNI
    and the AVX-512 caps ran, and so does the AVX2 cap where the CPUID mask shows the plugin an AVX2 CPU."""
    cap = onednn_isa_cap() or current().caps.get("ONEDNN_MAX_CPU_ISA")  # set now, or by the measuring process
    if cap in ("AVX2", "AVX", "SSE41") and "avx512f" in current().seen_by_libraries:
        return (f"openvino int8 cannot run under ONEDNN_MAX_CPU_ISA={cap} on this AVX-512 CPU: its plugin lays the "
                "compressed weights out for the CPU itself and the capped oneDNN has no kernel for them; run it "
                "without the cap (unset ENGINEBENCH_CPU_FEATURES)")
    return None


def _config(options: OpenVinoOptions, precision: str) -> dict:
    config = {
        "PERFORMANCE_HINT": options.hint.upper(),
        "INFERENCE_NUM_THREADS": options.threads,
        "INFERENCE_PRECISION_HINT": _COMPUTE[precision],
    }
    if options.num_streams > 0:
        config["NUM_STREAMS"] = options.num_streams
    if precision == "int8" and options.dynamic_quantization != "auto":
        config["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = (0 if options.dynamic_quantization == "off"
                                                     else int(options.dynamic_quantization))
    config["ENABLE_CPU_PINNING"] = cpu_pinning(options)
    return config


def cpu_pinning(options: OpenVinoOptions) -> bool:
    if options.pinning != "auto":
        return options.pinning == "true"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return options.threads >= cpus


def _compressed_ir(model: ModelSpec, onnx_path: Path) -> tuple[Path, dict]:
    """The ONNX model with int8 weights (NNCF), saved as OpenVINO IR in the artifact cache."""
    versions = f"openvino {metadata.version('openvino')}, nncf {metadata.version('nncf')}"
    key = artifact_key(onnx_key(model), model.until or "", versions, "INT8_ASYM")
    started = time.perf_counter()
    folder, cached = cached_artifact("openvino-int8", key, lambda out: _compress(onnx_path, out / "model.xml"))
    return folder / "model.xml", {
        "int8_cached": cached, "int8_artifact_s": round(time.perf_counter() - started, 3),
        "int8_scheme": f"nncf.compress_weights INT8_ASYM, per-channel ({versions})", "ir_path": str(folder / "model.xml"),
    }


def _compress(onnx_path: Path, out: Path) -> None:
    import contextlib
    import io
    import logging

    import nncf
    import openvino as ov

    nncf.set_log_level(logging.WARNING)  # its INFO is a bit-width table, printed on every compression
    with contextlib.redirect_stdout(io.StringIO()):  # and a rich progress bar, on stdout
        compressed = nncf.compress_weights(ov.Core().read_model(str(onnx_path)), mode=nncf.CompressWeightsMode.INT8_ASYM)
    ov.save_model(compressed, str(out), compress_to_fp16=False)  # the default would store fp16 weights


def _fake_quantized(output) -> bool:
    """Whether an activation reaches its consumer from a FakeQuantize through layout changes only."""
    node = output.get_node()
    while node.get_type_name() in _DATA_PATH:
        node = node.input(0).get_source_output().get_node()
    return node.get_type_name() == "FakeQuantize"


def _block(name: str) -> str:
    """The attention block a product belongs to: its name's scope (".../layer.0/attention/self")."""
    return name.rsplit("/", 1)[0]


# An attention product counts int8 where the IR fake-quantizes both its operands and the runtime node holding its
# attention block takes integer inputs. The CPU plugin fuses a block's products, softmax and scaling into one
# Subgraph that keeps P·V's name and drops Q·Kᵀ's (quantized or not), so a product is found by its block; the
# Subgraph's inputs are Q, K, the mask and V: [i8, i8, f32, f32] with Q·Kᵀ quantized, all float without.
def _runtime_int8(compiled, layers, activation_matmuls: dict[str, bool], tokens: int):
    """The weight MatMuls marked quantized where the CPU plugin's runtime graph executes them on int8 inputs
    (a FullyConnected or MatMul node, holding that MatMul or one of its dequantization ops among its original
    layers, whose runtimePrecision is u8 or i8), {(runtime precision, kernel): count} of those nodes, and
    {"int8", "total"} of the products of two activations (see the comment above).
    Kernels are chosen at the first call of a shape, so one call (batch 1 x `tokens`) runs first."""
    from collections import Counter

    compiled({port.get_any_name(): np.ones((1, tokens), dtype=np.int64) for port in compiled.inputs})
    executed, integer_blocks = {}, set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        ran = node_runs(info)
        names = info["originalLayersNames"].astype(str).split(",")
        if any(port.get_element_type().get_type_name() in INTEGER for port in op.inputs()):
            integer_blocks.update(_block(name) for name in names if name in activation_matmuls)
        if is_product(info):
            executed.update((name, ran) for name in names)
    attention = {"int8": sum(quantized and _block(name) in integer_blocks
                             for name, quantized in activation_matmuls.items()),
                 "total": len(activation_matmuls)}
    kernels = Counter()
    marked = []
    for layer in layers:
        runs = executed.get(layer.name) or next(
            (value for name, value in executed.items() if name.startswith(layer.name + "/")), None)
        int8 = runs is not None and runs[0] in INTEGER
        kernels.update([runs] if int8 else [])
        marked.append(layer._replace(quantized=int8))
    return marked, kernels, attention


def _static_record(layers, facts, kernels, path, attention: dict) -> dict:
    source = f"runtime graph of the compiled model ({Path(path).name}): runtimePrecision of each MatMul's node"
    products = {"attention_products": attention} if attention["total"] else {}
    if not kernels:
        return quantization_record("none: no weight MatMul runs in int8", "fp32", "fp32", layers, source,
                                   **products)
    inputs = {"u8": "uint8", "i8": "int8"}[kernels.most_common(1)[0][0][0]]
    granularity = facts["weight_granularity"].most_common(1)[0][0] if facts["weight_granularity"] else "per-channel"
    scheme = (f"static w8a8 ({granularity} int8 weights in a 7-bit range, static per-tensor {inputs} activations: "
              "NNCF FakeQuantize calibrated, SmoothQuant)")
    return quantization_record(scheme, "int8", inputs, layers, source,
                               embedding_tables_compressed=facts["gathers_compressed"], **products)


def _int8_weight_range(ov_model) -> list[int]:
    """[lowest, highest] of the int8 weight constants feeding MatMuls: within [-64, 64], u8 x s8 byte-pair sums
    cannot saturate int16. (NNCF also stores the embedding tables in int8; those feed Gathers, not MatMuls.)"""
    import openvino as ov

    lowest, highest = 0, 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        for port in op.inputs():
            for constant in _weight_constants(port.get_source_output()) or ():
                if constant.get_type_name() == "Constant" and constant.get_element_type() == ov.Type.i8:
                    data = constant.get_data()
                    lowest, highest = min(lowest, int(data.min())), max(highest, int(data.max()))
    return [lowest, highest]


def _int8_gemm(kernels) -> dict:
    """The kernels the int8 MatMuls run (oneDNN's brgemm with VNNI; jit_gemm without: byte-pair sums in int16)."""
    cap = onednn_isa_cap()
    return {"kernels": {kernel: n for (_, kernel), n in kernels.items()}, "kernels_read_after": "one call, batch 1",
            "vnni": vnni_available(cap=cap), "onednn_max_cpu_isa": cap}


STATIC_SETTINGS = {"model_type": "TRANSFORMER", "preset": "nncf's default for transformers (MIXED)",
                   "ignored_scope": "FFN down-projections (MatMul weight with more rows than columns)",
                   "smooth_quant_alpha_matmul": 0.5, "overflow_fix": "ENABLE (7-bit weights in every MatMul)",
                   "subset_size": "every calibration input"}


# Every Linear in int8 where oneDNN has VNNI (its int32 dot products cannot saturate, so the weights keep all 8
# bits) with NNCF's own SmoothQuant: min cosine 0.9959 on the corpus (0.9845 with alpha 0.5, 0.9884 with 7-bit
# weights, 0.9829 with both) at 193 items/s against 116 with the down-projections fp32, batch 32, a Zen 4 EPYC,
# 2026-12-07. Titles lose more (0.981): each result measures its own fidelity.
ALL_LAYERS_VNNI = {"ignored_scope": "none", "smooth_quant_alpha_matmul": "nncf's default",
                   "overflow_fix": "DISABLE (8-bit weights: VNNI's int32 sums do not saturate)"}


def _static_settings(int8_layers: str) -> dict:
    if int8_layers == "no-ffn-down":
        return STATIC_SETTINGS
    if vnni_available(cap=onednn_isa_cap()):
        return {**STATIC_SETTINGS, **ALL_LAYERS_VNNI}
    return {**STATIC_SETTINGS, "ignored_scope": "none"}


def _static_ir(model: ModelSpec, onnx_path: Path, measured, int8_layers: str) -> tuple[Path, dict]:
    """The ONNX model quantized by nncf.quantize on calibration inputs apart from `measured`, cached as IR
    under the calibration set's identity, the settings and the libraries' versions."""
    calibration = calibration_set(model.path, measured)
    versions = f"openvino {metadata.version('openvino')}, nncf {metadata.version('nncf')}"
    chosen = _static_settings(int8_layers)
    key = artifact_key(onnx_key(model), model.until or "", versions, calibration.identity(),
                       repr(sorted(chosen.items())))
    started = time.perf_counter()
    folder, cached = cached_artifact("openvino-int8-static", key,
                                     lambda out: _quantize_static(onnx_path, out, calibration, int8_layers, chosen))
    return folder / "model.xml", {
        "int8_cached": cached, "int8_artifact_s": round(time.perf_counter() - started, 3),
        "quantizer": f"nncf.quantize ({versions})", "int8_settings": chosen,
        "calibration": {**calibration.record(), "method": "NNCF MinMax statistics (its transformer defaults)"},
        # seconds spent when the artifact was built: nncf.quantize collects its statistics (runs the
        # calibration inputs) inside the call, so quantize_s includes calibration
        "int8_cost": json.loads((folder / "quantize.json").read_text()),
        "ir_path": str(folder / "model.xml"),
    }


def _quantize_static(onnx_path: Path, folder: Path, calibration, int8_layers: str, chosen: dict) -> None:
    import contextlib
    import io
    import logging

    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    ov_model = ov.Core().read_model(str(onnx_path))
    feeds = calibration.feeds([port.get_any_name() for port in ov_model.inputs])
    alpha = chosen["smooth_quant_alpha_matmul"]
    smooth = {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=alpha)} if isinstance(alpha, float) else {}
    nncf.set_log_level(logging.WARNING)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars go to stdout
        quantized = nncf.quantize(
            ov_model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
            ignored_scope=nncf.IgnoredScope(names=kept_fp32(onnx_outline(onnx_path), int8_layers)),
            advanced_parameters=AdvancedQuantizationParameters(
                overflow_fix=nncf.OverflowFix[chosen["overflow_fix"].split()[0]], **smooth))
    quantize_s = time.perf_counter() - started
    ov.save_model(quantized, str(folder / "model.xml"), compress_to_fp16=False)
    (folder / "quantize.json").write_text(json.dumps({"quantize_s": round(quantize_s, 3),
                                                      "calibration_items": calibration.size}))
