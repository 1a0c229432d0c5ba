"""What an int8 result really quantized, read from what the engine runs, and the label the table shows for it.

Every int8 session records `details["quantization"]`:

    {"scheme": "dynamic w8a8 (per-channel int8 weights, per-tensor dynamic uint8 activations)",
     "weights": "int8", "activations": "uint8" | "int8" | "fp32" | ...,
     "share_of_matmul_flops": 0.667, "matmuls": {"quantized": 30, "total": 36},
     "layers_kept": ["/transformer/encoder/layer.*/output/dense/MatMul"], "source": "...", ...}

`share_of_matmul_flops` is the share of the weight MatMuls' FLOPs that run quantized: Linear / Gemm / MatMul
layers whose second operand is a constant weight, each costing in_features x out_features multiply-adds per
token. Products of two activations (attention's Q x K^T and probabilities x V) have no weight to quantize
and are excluded, as are layers that run on one token per sequence rather than every token (BERT's pooler,
whose output the sentence embedding does not use; see `is_pooler`). The walkers here read the graph, the
module tree or the weight file that the engine really loads: no number is assumed from the settings.

`attention_products` ({"int8": 6, "total": 12}), where an engine can quantize them: how many products of two
activations (attention's Q x K^T and probabilities x V) run on int8 operands. The compute roofline counts their
FLOPs in int8 (measure/compute_roofline.py).

`layers_kept` names the weight MatMuls left in floating point, with the layer indices that vary collapsed to
`*` (`transformer.encoder.layer.*.output.dense` stands for one such layer in every block).
"""

from __future__ import annotations

import re
import struct
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, NamedTuple


class WeightMatmul(NamedTuple):
    """One matrix multiplication by a constant weight: `in_features x out_features` multiply-adds per token."""

    name: str
    in_features: int
    out_features: int
    quantized: bool


POOLER_NOTE = "runs on one token per sequence (BERT's pooler; the sentence embedding does not use it)"


def is_pooler(name: str) -> bool:
    """BERT-family poolers (a dense layer over the first token): excluded from the per-token FLOP share."""
    return "pooler" in name.lower()


def name_patterns(names: Iterable[str]) -> list[str]:
    """Collapse names that differ only in numbers: the numbers that vary within a group become `*`.

    ["layer.0.out", "layer.1.out", "emb"] -> ["layer.*.out", "emb"]; a name alone in its group stays whole.
    """
    groups: dict[tuple, list[list[str]]] = defaultdict(list)
    for name in names:
        parts = re.split(r"(\d+)", name)
        groups[tuple(parts[0::2])].append(parts[1::2])
    out = []
    for text, numbers in groups.items():
        slots = ["*" if len({n[i] for n in numbers}) > 1 else numbers[0][i] for i in range(len(numbers[0]))]
        merged = [piece for pair in zip(text, slots + [""]) for piece in pair]
        out.append("".join(merged))
    return out


def matmul_summary(layers: Iterable[WeightMatmul]) -> dict:
    """share_of_matmul_flops, matmuls {quantized, total} and layers_kept (patterns) from the weight MatMuls.

    Poolers (`is_pooler`) are left out of the share and listed under `excluded`."""
    layers = list(layers)
    excluded = [m.name for m in layers if is_pooler(m.name)]
    counted = [m for m in layers if not is_pooler(m.name)]
    total = sum(m.in_features * m.out_features for m in counted)
    quantized = sum(m.in_features * m.out_features for m in counted if m.quantized)
    summary = {
        "share_of_matmul_flops": round(quantized / total, 6) if total else 0.0,
        "matmuls": {"quantized": sum(m.quantized for m in counted), "total": len(counted)},
        "layers_kept": name_patterns(m.name for m in counted if not m.quantized),
    }
    if excluded:
        summary["excluded"] = {name: POOLER_NOTE for name in excluded}
    return summary


def quantization_record(scheme: str, weights: str, activations: str, layers: Iterable[WeightMatmul],
                        source: str, **extra) -> dict:
    """The `details["quantization"]` dict (see the module docstring)."""
    return {"scheme": scheme, "weights": weights, "activations": activations, **matmul_summary(layers),
            "source": source, **extra}


_DTYPE_PRECISIONS = {"float32": "fp32", "f32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16",
                     "f16": "fp16", "half": "fp16", "float": "fp32", "int8": "int8", "qint8": "int8", "uint8": "int8",
                     "float64": "fp64", "double": "fp64"}


def dtype_precision(dtype) -> str:
    """A dtype's name (numpy, torch, jax, tinygrad, OpenVINO or CTranslate2 spelling) -> fp32 / bf16 / fp16 / int8."""
    name = str(dtype).lower().rsplit(".", 1)[-1]
    return _DTYPE_PRECISIONS.get(name, name)


def weights_precision(dtypes: Iterable) -> str:
    """The precision of a set of weight dtypes: one name, or "mixed(a+b)" when they differ."""
    found = sorted({dtype_precision(d) for d in dtypes})
    if not found:
        return "unknown"
    return found[0] if len(found) == 1 else f"mixed({'+'.join(found)})"


def _bits(dtype: str) -> str | None:
    """8 for int8/uint8, 32 for fp32, 16 for bf16/fp16, ..."""
    found = re.search(r"\d+", dtype or "")
    return found[0] if found else None


def short_label(quantization: dict | None) -> str:
    """`w8a8, 67% of MatMul FLOPs` (int8 weights and activations) or `w8a32, 100% of MatMul FLOPs` (int8
    weights, fp32 activations: weights-only quantization): the table's precision detail."""
    if not quantization:
        return ""
    share = quantization.get("share_of_matmul_flops")
    weights = quantization.get("weights", "")
    if not weights.startswith(("int", "uint")) or not share:
        return "no MatMul quantized"
    kind = f"w{_bits(weights)}a{_bits(quantization.get('activations') or 'fp32') or '?'}"
    percent = 100 * share
    text = f"{percent:.0f}"
    if text in ("0", "100") and 0 < share < 1:  # never round a partial share to none or all
        text = f"{percent:.1f}"
    return f"{kind}, {text}% of MatMul FLOPs"


# ---------------------------------------------------------------------------------------------------------------
# ONNX graphs (ONNX Runtime's quantized files)

# op type -> (index of the weight input, index of its zero point or scale (per-channel when it has > 1 element))
_ONNX_QUANTIZED = {
    "MatMulInteger": (1, 3),  # A, B, a_zero_point, b_zero_point (dynamic quantization: A from DynamicQuantizeLinear)
    "DynamicQuantizeMatMul": (1, 2),  # com.microsoft: A (float), B, b_scale, b_zero_point, bias
    "MatMulIntegerToFloat": (1, 3),  # com.microsoft: A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias
    "QLinearMatMul": (3, 4),  # a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point
}
_ONNX_FLOAT = ("MatMul", "Gemm", "FusedMatMul")
_ONNX_TYPES = {1: "fp32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 10: "fp16", 16: "bf16", 22: "int4",
               21: "uint4"}


def _onnx_constants(graph) -> dict[str, tuple[tuple[int, ...], int]]:
    """{tensor name: (dims, ONNX data type)} of initializers and Constant nodes."""
    found = {init.name: (tuple(init.dims), init.data_type) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = (tuple(attr.t.dims), attr.t.data_type)
    return found


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def onnx_weight_matmuls(model, qdq_runs_float: bool = False) -> tuple[list[WeightMatmul], dict]:
    """The weight MatMuls of an ONNX model (an onnx.ModelProto; weights need not be loaded) and facts about the
    quantized ones: Counters of "ops", "weights" (dtype), "weight_granularity", "activations" ((how, dtype)),
    and "float_weights" (dtype of the float ones); "activation_matmuls" and "activation_matmuls_int8", the products of two
    activations (attention) and those of them that run as integer ops; "qdq_left_float", QDQ MatMuls counted as float (see below).

    Quantized: MatMulInteger, DynamicQuantizeMatMul, MatMulIntegerToFloat, QLinearMatMul, MatMulNBits, and
    QDQ (a MatMul/Gemm whose weight comes from DequantizeLinear of an integer constant). Float: MatMul, Gemm,
    FusedMatMul with a constant weight. A MatMul of two activations is not a weight MatMul and is skipped.

    `qdq_runs_float`: the graph is the one a session runs after its optimizations (ONNX Runtime's
    optimized_model_filepath). There a QDQ MatMul that its optimizer did not fuse into an integer op is a float
    MatMul on dequantized values (ONNX Runtime at graph_optimization basic or disable), so it counts as float."""
    graph = model.graph
    constants = _onnx_constants(graph)
    producer = {out: node for node in graph.node for out in node.output}
    layers: list[WeightMatmul] = []
    facts = {key: Counter() for key in ("ops", "weights", "weight_granularity", "activations", "float_weights")}
    facts["activation_matmuls_int8"] = 0
    facts["activation_matmuls"] = 0
    facts["qdq_left_float"] = 0

    def add(node, dims, quantized: bool) -> None:
        rows, cols = int(dims[-2]), _numel(dims) // int(dims[-2])
        transposed = any(a.name == "transB" and a.i for a in node.attribute)  # Gemm's B stored as [out, in]
        layers.append(WeightMatmul(node.name, cols if transposed else rows, rows if transposed else cols, quantized))

    def granularity(scale_or_zero_point) -> str:
        return "per-channel" if scale_or_zero_point and _numel(scale_or_zero_point[0]) > 1 else "per-tensor"

    def input_at(node, i: int):
        return constants.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    for node in graph.node:
        op = node.op_type
        if op in _ONNX_QUANTIZED:
            w_index, zp_index = _ONNX_QUANTIZED[op]
            weight = input_at(node, w_index)
            if weight is None or len(weight[0]) < 2:
                activations = weight is None and op in ("QLinearMatMul", "MatMulInteger")
                facts["activation_matmuls_int8"] += activations
                facts["activation_matmuls"] += activations
                continue
            add(node, weight[0], True)
            facts["weights"][_ONNX_TYPES.get(weight[1], str(weight[1]))] += 1
            facts["weight_granularity"][granularity(input_at(node, zp_index))] += 1
            source = producer.get(node.input[0])
            if op == "QLinearMatMul":
                facts["activations"][("static", _zero_point_type(input_at(node, 2)))] += 1
            elif op == "DynamicQuantizeMatMul" or (source is not None and source.op_type == "DynamicQuantizeLinear"):
                facts["activations"][("dynamic", "uint8")] += 1  # DynamicQuantizeLinear: per tensor, uint8
            elif source is not None and source.op_type == "QuantizeLinear":  # a fused QDQ: calibrated scale
                facts["activations"][("static", _zero_point_type(input_at(source, 2)))] += 1
            else:
                facts["activations"][("dynamic", "int8")] += 1
        elif op == "MatMulNBits":  # com.microsoft block-quantized weights, float activations
            attrs = {a.name: a.i for a in node.attribute}
            layers.append(WeightMatmul(node.name, int(attrs.get("K", 0)), int(attrs.get("N", 0)), True))
            facts["weights"][f"int{attrs.get('bits', 4)}"] += 1
            facts["weight_granularity"][f"blocks of {attrs.get('block_size', '?')}"] += 1
            # accuracy_level 4: MLAS quantizes the activations to int8 per block at run time (integer dot products)
            facts["activations"][("blockwise", "int8") if attrs.get("accuracy_level") == 4 else ("none", "fp32")] += 1
        elif op in _ONNX_FLOAT and len(node.input) > 1:
            dq = producer.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in constants:
                dims, dtype = constants[dq.input[0]]  # QDQ: an integer weight dequantized into a float MatMul
                if len(dims) < 2:
                    continue
                if qdq_runs_float:
                    add(node, dims, False)
                    facts["float_weights"]["fp32"] += 1
                    facts["qdq_left_float"] += 1
                    continue
                add(node, dims, True)
                op = f"QDQ {op}"
                facts["weights"][_ONNX_TYPES.get(dtype, str(dtype))] += 1
                facts["weight_granularity"][granularity(input_at(dq, 1))] += 1
                a_dq = producer.get(node.input[0])
                facts["activations"][("static", _zero_point_type(input_at(a_dq, 2)))
                                     if a_dq is not None and a_dq.op_type == "DequantizeLinear" else ("none", "fp32")] += 1
            else:
                weight = input_at(node, 1)
                if weight is None and op == "MatMul":  # a float product of two activations (attention)
                    facts["activation_matmuls"] += 1
                    continue
                if weight is None or len(weight[0]) < 2:
                    continue  # a vector
                add(node, weight[0], False)
                facts["float_weights"][_ONNX_TYPES.get(weight[1], str(weight[1]))] += 1
                continue
        else:
            continue
        facts["ops"][op] += 1
    return layers, facts


def _zero_point_type(zero_point) -> str:
    """The integer type of a (De)QuantizeLinear or QLinearMatMul zero point; uint8 when absent (ONNX's default)."""
    return _ONNX_TYPES.get(zero_point[1], str(zero_point[1])) if zero_point else "uint8"


def onnx_executed_precision(layers: list[WeightMatmul], facts: dict) -> str:
    """int8 (or int4, ...) when the graph's weight MatMuls really are quantized; else the float weights' type."""
    if any(m.quantized for m in layers):
        return facts["weights"].most_common(1)[0][0].replace("uint", "int")
    return (facts["float_weights"] or Counter({"fp32": 1})).most_common(1)[0][0]


def onnx_quantization(model, source: str, qdq_runs_float: bool = False) -> dict:
    """`details["quantization"]` for an ONNX graph (see onnx_weight_matmuls); static graphs add
    `attention_products` (see the module docstring) and, read from a session's optimized graph, `qdq_left_float`."""
    layers, facts = onnx_weight_matmuls(model, qdq_runs_float)
    extra = {"qdq_left_float": facts["qdq_left_float"]} if facts["qdq_left_float"] else {}
    if facts["activation_matmuls"]:
        extra["attention_products"] = {"int8": facts["activation_matmuls_int8"], "total": facts["activation_matmuls"]}
    if not any(m.quantized for m in layers):
        return quantization_record("none: no weight MatMul is quantized", "fp32", "fp32", layers, source, **extra)
    weights = facts["weights"].most_common(1)[0][0]
    granularity = facts["weight_granularity"].most_common(1)[0][0]
    how, activations = facts["activations"].most_common(1)[0][0]
    if how == "dynamic":
        scheme = f"dynamic w8a8 ({granularity} {weights} weights, per-tensor dynamic {activations} activations)"
    elif how == "blockwise":
        scheme = (f"block-wise w8a8 ({granularity} {weights} weights, activations quantized to {activations} per "
                  "block at run time)")
    elif how == "static":
        scheme = f"static w8a8 ({granularity} {weights} weights, static per-tensor {activations} activations)"
    else:
        scheme = f"weights-only {weights} ({granularity}), {activations} compute"
    return quantization_record(scheme, weights, activations, layers, source, ops=dict(facts["ops"]), **extra)


def onnx_outline(path):
    """The ONNX model a graph walk reads (names, dims and types of every node and initializer); weights kept in
    external data files are not read."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")  # include/ctranslate2/types.h order


def ct2_variables(model_bin: Path) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, dtype) of every variable in a CTranslate2 model.bin (binary format version >= 5), read
    from its headers only (the data is skipped). Raises ValueError for a format it does not know."""
    out = []
    with open(model_bin, "rb") as f:
        def read(fmt):
            size = struct.calcsize(fmt)
            data = f.read(size)
            if len(data) != size:
                raise ValueError(f"{model_bin}: truncated")
            return struct.unpack("<" + fmt, data)[0]

        def string():
            n = read("H")
            return f.read(n)[:-1].decode("utf-8")

        version = read("I")
        if version < 5:
            raise ValueError(f"{model_bin}: binary version {version} is older than this reader knows")
        string()  # spec name
        read("I")  # spec revision
        for _ in range(read("I")):
            name = string()
            shape = tuple(read("I") for _ in range(read("B")))
            dtype = _CT2_DTYPES[read("B")]
            f.seek(read("I"), 1)
            out.append((name, shape, dtype))
    return out


def ct2_weight_matmuls(variables, compute_type: str) -> tuple[list[WeightMatmul], dict]:
    """The Linear layers of a CTranslate2 model: rank-2 `<scope>/weight` variables outside embeddings.

    Stored as [out, in]. A weight counts as quantized when it is stored as int8 and the model was loaded
    with an int8 compute type (loaded as float32, CTranslate2 dequantizes int8 weights)."""
    by_name = {name: (shape, dtype) for name, shape, dtype in variables}
    layers, facts = [], {"weights": Counter(), "weight_granularity": Counter()}
    for name, shape, dtype in variables:
        scope, _, leaf = name.rpartition("/")
        if leaf != "weight" or len(shape) != 2 or scope.rsplit("/", 1)[-1].startswith("embeddings"):
            continue
        quantized = dtype in ("int8", "int16") and compute_type.startswith(dtype)
        layers.append(WeightMatmul(scope, int(shape[1]), int(shape[0]), quantized))
        if quantized:
            facts["weights"][dtype] += 1
            scale = by_name.get(scope + "/weight_scale")
            facts["weight_granularity"]["per-channel" if scale and _numel(scale[0]) > 1 else "per-tensor"] += 1
    return layers, facts


__all__ = ["WeightMatmul", "is_pooler", "name_patterns", "matmul_summary", "quantization_record", "dtype_precision",
           "weights_precision", "short_label", "onnx_outline", "onnx_weight_matmuls", "onnx_executed_precision",
           "onnx_quantization", "ct2_variables", "ct2_weight_matmuls"]
