"""OpenVINO on the CPU, from the cached ONNX export.

OpenVINO's CPU plugin runs bf16 by default wherever the CPU has bf16 instructions, so every precision sets
INFERENCE_PRECISION_HINT explicitly and the executed precision is read back from the compiled model.
int8 is weight compression (NNCF INT8_ASYM, per-channel): int8 weights, fp32 activations; cached as IR.
A session runs one synchronous infer request: more than one stream only pays off with requests in flight
together (the throughput scenario's parallel callers), not within one call.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.errors import UsageError
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

_HINTS = ("LATENCY", "THROUGHPUT")
# the compute precision each requested precision asks the CPU plugin for
_COMPUTE = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_OV_TYPE_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


@dataclass(frozen=True)
class OpenVinoOptions(EngineOptions):
    hint: str = field(default="LATENCY", metadata={"choices": _HINTS})  # PERFORMANCE_HINT
    num_streams: int = field(default=0, metadata={"min": 0})  # NUM_STREAMS; 0 lets the performance hint choose


class OpenVinoSession(Session):
    def __init__(self, compiled, details: dict, executed_precision: str):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output = compiled.output(0)
        self.executed_precision = executed_precision
        self.details = details

    def prepare(self, batch: TokenBatch):
        return batch.feeds(self.input_names)

    def run(self, prepared) -> np.ndarray:
        # the result views the request's output tensor, which the next call overwrites
        return np.array(self.request.infer(prepared)[self.output], copy=True)


class OpenVinoEngine(Engine):
    name = "openvino"
    library = "openvino"
    requires = ("openvino", "onnx", "torch", "transformers")  # torch exports the ONNX file
    extra = "openvino"
    precisions = ("fp32", "bf16", "int8")
    formats = ("onnx", "openvino-ir")
    Options = OpenVinoOptions
    library_precisions = ("fp16", "int4")
    backend = "oneDNN + its own JIT kernels (CPU plugin)"
    parallelism = "no (streams run requests in parallel on one device)"
    training = "no"
    cuts_graph = True  # loads any ONNX graph: `run --until NODE` and `blocks`

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import openvino as ov

        return tuple(device.lower() for device in ov.Core().available_devices)

    @classmethod
    def unsupported_reason(cls, precision: str) -> str | None:
        reason = super().unsupported_reason(precision)
        if reason is None and precision == "int8" and importlib.util.find_spec("nncf") is None:
            return "openvino int8 compresses weights with nncf, which is not installed: pip install 'enginebench[openvino]'"
        if reason is None and precision == "bf16":
            import openvino as ov

            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in capabilities:
                return f"this CPU has no bf16 support in OpenVINO (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)})"
        return reason

    def load(self, model: ModelSpec, precision: str, options: OpenVinoOptions) -> Session:
        import openvino as ov

        from enginebench.models.onnx_export import onnx_encoder

        if options.hint.upper() not in _HINTS:
            raise UsageError(f"openvino hint {options.hint!r} is unknown: use --option openvino.hint=LATENCY or THROUGHPUT")
        path, details = onnx_encoder(model)
        if precision == "int8":
            path, compress = _compressed_ir(model, path)
            details = {**details, **compress}
        core = ov.Core()
        ov_model = core.read_model(str(path))
        layers, facts = openvino_weight_matmuls(ov_model)  # the weights as the plugin receives them
        compiled = core.compile_model(ov_model, "CPU", _config(options, precision))
        computed = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", ...
        executed = _OV_TYPE_NAMES.get(computed, computed)
        if any(m.quantized for m in layers):  # compressed weights really are in the model
            executed = f"int8-weights/{executed}"
        if precision == "int8":
            details["quantization"] = _quantization_record(layers, facts, executed.rsplit("/", 1)[-1], path)
        threads = int(compiled.get_property("INFERENCE_NUM_THREADS"))
        details.update({
            "executed_precision_source": "the compiled model's INFERENCE_PRECISION_HINT; int8-weights when MatMul "
                                         "weights in the model read are integer constants",
            "threads_used": threads, "threads_source": "compiled model's INFERENCE_NUM_THREADS",
            "inference_precision": computed, "performance_hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),  # OpenVINO caps streams at the threads
            "num_streams_requested": options.num_streams or "auto",
            "inference_threads": threads,
            "optimal_requests": int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
        })
        return OpenVinoSession(compiled, details, executed)

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
    of the compressed weights' element types and granularity, zero points, and int8 embedding tables."""
    from collections import Counter

    from enginebench.measure.quantization import WeightMatmul

    layers = []
    facts = {"weights": Counter(), "weight_granularity": Counter(), "zero_points": 0, "gathers_compressed": 0}
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
    return layers, facts


def _shape_size(node) -> int:
    size = 1
    for d in node.get_output_partial_shape(0):
        size *= d.get_length()
    return size


def _quantization_record(layers, facts, compute: str, path) -> dict:
    from enginebench.measure.quantization import quantization_record

    source = f"MatMul weight constants of the OpenVINO model compiled ({Path(path).name})"
    if not any(m.quantized for m in layers):
        return quantization_record("none: no MatMul weight is compressed", "fp32", compute, layers, source)
    stored = facts["weights"].most_common(1)[0][0]  # u8 for INT8_ASYM
    bits = "".join(ch for ch in stored if ch.isdigit()) or "8"
    granularity = facts["weight_granularity"].most_common(1)[0][0]
    zero_points = "with zero points" if facts["zero_points"] else "symmetric"
    scheme = f"weights-only int{bits} ({granularity} {stored} weights {zero_points}), {compute} compute"
    return quantization_record(scheme, f"int{bits}", compute, layers, source,
                               embedding_tables_compressed=facts["gathers_compressed"])


def _config(options: OpenVinoOptions, precision: str) -> dict:
    config = {
        "PERFORMANCE_HINT": options.hint.upper(),
        "INFERENCE_NUM_THREADS": options.threads,
        "INFERENCE_PRECISION_HINT": _COMPUTE[precision],
    }
    if options.num_streams > 0:
        config["NUM_STREAMS"] = options.num_streams
    return config


def _compressed_ir(model: ModelSpec, onnx_path: Path) -> tuple[Path, dict]:
    """The ONNX model with int8 weights (NNCF), saved as OpenVINO IR in the artifact cache."""
    from enginebench.models.artifacts import artifact_key, cached_artifact
    from enginebench.models.onnx_export import onnx_key

    versions = f"openvino {metadata.version('openvino')}, nncf {metadata.version('nncf')}"
    key = artifact_key(onnx_key(model), model.until or "", versions, "INT8_ASYM")
    started = time.perf_counter()
    folder, cached = cached_artifact("openvino-int8", key, lambda out: _compress(onnx_path, out / "model.xml"))
    return folder / "model.xml", {
        "int8_cached": cached, "int8_compress_s": round(time.perf_counter() - started, 3),
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
