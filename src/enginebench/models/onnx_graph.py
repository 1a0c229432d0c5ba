"""The exported ONNX graph as something a user can inspect and cut: its nodes, a model cut at one node's
output (`enginebench run --until NODE`), and the model split into blocks (`enginebench blocks`).

Cuts and blocks are subgraphs taken with onnx.utils.Extractor, fed exactly the tensors they really need.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from enginebench.errors import UsageError
from enginebench.models.artifacts import artifact_key, cached_artifact

CUT_VERSION = "1"  # bump when the way a cut or a block is extracted changes


@dataclass(frozen=True)
class NodeInfo:
    name: str
    op_type: str
    outputs: tuple[str, ...]
    shapes: tuple[str, ...]  # one per output, "?" where shape inference could not tell


def _load(path: Path, infer: bool = True):
    import onnx

    model = onnx.load(str(path))
    return onnx.shape_inference.infer_shapes(model) if infer else model


def _shape_text(value_info) -> str:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return "?"
    dims = [d.dim_param or (str(d.dim_value) if d.HasField("dim_value") else "?") for d in tensor.shape.dim]
    return "[" + ", ".join(dims) + "]"


def list_nodes(path: Path) -> list[NodeInfo]:
    """Every node in graph order, with its output tensors and their inferred shapes."""
    model = _load(path)
    known = {v.name: v for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    return [NodeInfo(n.name, n.op_type, tuple(n.output),
                     tuple(_shape_text(known[o]) if o in known else "?" for o in n.output))
            for n in model.graph.node]


def resolve_cut(path: Path, name: str, model_name: str = "MODEL") -> str:
    """The tensor to cut at: a node's (first) output, or a tensor named directly. UsageError if unknown."""
    model = _load(path, infer=False)
    for node in model.graph.node:
        if node.name == name:
            return node.output[0]
    if any(name in node.output for node in model.graph.node):
        return name
    raise UsageError(f"no node or tensor named {name!r} in the ONNX graph: list them with "
                     f"`enginebench nodes --model {model_name}`")


def _producers(graph) -> dict[str, int]:
    return {out: i for i, node in enumerate(graph.node) for out in node.output}


def needed_inputs(model, outputs: list[str]) -> list[str]:
    """Graph inputs that computing `outputs` really reads, in the graph's order (a cut at the embeddings'
    output needs no attention_mask, for instance)."""
    graph = model.graph
    producers = _producers(graph)
    initializers = {i.name for i in graph.initializer}
    graph_inputs = [i.name for i in graph.input]
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        tensor = stack.pop()
        if tensor in seen or not tensor or tensor in initializers:
            continue
        seen.add(tensor)
        if tensor not in producers:
            found.add(tensor)
            continue
        node = graph.node[producers[tensor]]
        stack.extend(node.input)
        for attr in node.attribute:  # tensors that subgraphs (If/Loop bodies) read from the outer graph
            for sub in [attr.g, *attr.graphs]:
                inner = {o for n in sub.node for o in n.output} | {i.name for i in [*sub.input, *sub.initializer]}
                stack.extend(i for n in sub.node for i in n.input if i not in inner)
    return [name for name in graph_inputs if name in found]


def extract(source: Path, out: Path, inputs: list[str], outputs: list[str]) -> None:
    """Write the subgraph of `source` computing `outputs` from `inputs` (weights included) to `out`."""
    import onnx
    from onnx.utils import Extractor

    extractor = Extractor(_load(source))
    sub = extractor.extract_model(inputs, outputs)
    onnx.save(sub, str(out))


def cut_at(source: Path, tensor: str, out: Path) -> None:
    model = _load(source, infer=False)
    extract(source, out, needed_inputs(model, [tensor]), [tensor])


# -- blocks -----------------------------------------------------------------------------------------

# A scope component like "layer.3", "layers_3", "h.11", "block.0" in node names such as
# "/transformer/encoder/layer.3/attention/...": the repeated layers of the network.
_SCOPE = re.compile(r"^(?P<prefix>.*?/[A-Za-z][\w]*?)[._](?P<index>\d+)/")


@dataclass(frozen=True)
class Block:
    name: str  # "embeddings", "layer 0", ..., "pooling"
    inputs: tuple[str, ...]  # graph inputs or earlier blocks' outputs it reads
    outputs: tuple[str, ...]  # tensors later blocks (or the model's outputs) read
    nodes: int


def _layer_scope(names: list[str]) -> str | None:
    """The scope prefix whose numbered children are the repeated layers (the one with most indices)."""
    indices: dict[str, set[int]] = {}
    for name in names:
        m = _SCOPE.match(name)
        if m:
            indices.setdefault(m["prefix"], set()).add(int(m["index"]))
    best = max(indices.items(), key=lambda kv: len(kv[1]), default=None)
    return best[0] if best and len(best[1]) >= 2 else None


def assign_blocks(model) -> list[int]:
    """Block number of every node: 0 = before the first layer, 1+i = layer i, last = after the last layer.

    Nodes outside any layer's scope that sit between layers (unnamed constants, shape arithmetic) go to the
    first block that reads them, never before a block they read from.
    """
    nodes = model.graph.node
    scope = _layer_scope([n.name for n in nodes])
    if scope is None:
        raise UsageError("no repeated layers found in the ONNX graph's node names: this model cannot be split into blocks")
    pattern = re.compile(re.escape(scope) + r"[._](\d+)/")
    layer_of = [int(m[1]) if (m := pattern.match(n.name)) else None for n in nodes]
    layers = sorted({i for i in layer_of if i is not None})
    number = {layer: k + 1 for k, layer in enumerate(layers)}
    first = next(i for i, v in enumerate(layer_of) if v is not None)
    last = max(i for i, v in enumerate(layer_of) if v is not None)
    pooling = len(layers) + 1
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(i)
    block = [0] * len(nodes)
    for i in reversed(range(len(nodes))):  # consumers come after producers: fill from the end
        if layer_of[i] is not None:
            block[i] = number[layer_of[i]]
        elif i < first:
            block[i] = 0
        elif i > last:
            block[i] = pooling
        else:
            readers = [block[c] for t in nodes[i].output for c in consumers.get(t, [])]
            block[i] = min(readers, default=pooling)
    producers = _producers(model.graph)
    for i, node in enumerate(nodes):  # never before what it reads
        block[i] = max([block[i], *(block[producers[t]] for t in node.input if t in producers)])
    return block


def find_blocks(path: Path) -> list[Block]:
    """The model as consecutive blocks: embeddings, each repeated layer, pooling."""
    model = _load(path, infer=False)
    graph = model.graph
    block = assign_blocks(model)
    count = max(block) + 1
    producers = _producers(graph)
    initializers = {i.name for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    inputs: list[list[str]] = [[] for _ in range(count)]
    outputs: list[list[str]] = [[] for _ in range(count)]
    for i, node in enumerate(graph.node):
        b = block[i]
        for tensor in node.input:
            if not tensor or tensor in initializers or tensor in inputs[b]:
                continue
            source = block[producers[tensor]] if tensor in producers else -1
            if source != b:
                inputs[b].append(tensor)
                if source >= 0 and tensor not in outputs[source]:
                    outputs[source].append(tensor)
        for tensor in node.output:
            if tensor in graph_outputs and tensor not in outputs[b]:
                outputs[b].append(tensor)
    names = ["embeddings", *(f"layer {k}" for k in range(count - 2)), "pooling"]
    sizes = Counter(block)
    return [Block(names[b], tuple(inputs[b]), tuple(outputs[b]), sizes[b]) for b in range(count) if sizes[b]]


# -- cached artifacts -------------------------------------------------------------------------------

def cut_model(source: Path, source_key: str, until: str) -> tuple[Path, dict]:
    """The exported model cut at node/tensor `until`, cached under the export's key and the cut."""
    tensor = resolve_cut(source, until)
    key = artifact_key(source_key, "cut", tensor, CUT_VERSION)
    folder, cached = cached_artifact("onnx-cut", key, lambda out: cut_at(source, tensor, out / "model.onnx"))
    return folder / "model.onnx", {"cut_at": until, "cut_output": tensor, "cut_cached": cached,
                                   "onnx_path": str(folder / "model.onnx")}


def block_models(source: Path, source_key: str) -> list[tuple[Block, Path]]:
    """Each block of the exported model as its own ONNX file (cached together)."""
    blocks = find_blocks(source)

    def build(out: Path) -> None:
        for k, block in enumerate(blocks):
            extract(source, out / f"block{k}.onnx", list(block.inputs), list(block.outputs))

    folder, _ = cached_artifact("onnx-blocks", artifact_key(source_key, "blocks", CUT_VERSION), build)
    return [(block, folder / f"block{k}.onnx") for k, block in enumerate(blocks)]
