"""A BERT-family encoder's config and weights as plain numpy arrays, for engines that write the forward themselves.

Every size comes from config.json; tensor names are normalised (a checkpoint saved from BertForX carries a
"bert." prefix, one saved from BertModel does not), and linear weights are transposed to [in, out] so an
engine computes `x @ w + b`. Only safetensors are read (safetensors.numpy: no torch needed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from enginebench.errors import UsageError

# hidden_act values (transformers' ACT2FN names) -> the activation the engines implement
ACTIVATIONS = {
    "gelu": "gelu_erf",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
SUPPORTED_MODEL_TYPES = ("bert",)


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    activation: str  # one of ACTIVATIONS' values
    vocab_size: int
    max_positions: int
    type_vocab_size: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def read_bert_config(model_path: str | Path) -> BertConfig:
    config = json.loads((Path(model_path) / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UsageError(f"{model_path} is a {model_type!r} model; this engine's hand-written forward supports "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}: use the torch or onnxruntime engine for it")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UsageError(f"{model_path} uses {config['position_embedding_type']!r} position embeddings; only "
                         "'absolute' is implemented: use the torch or onnxruntime engine for it")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise UsageError(f"{model_path} uses hidden_act={act!r}; supported: {', '.join(ACTIVATIONS)}")
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if hidden % heads:
        raise UsageError(f"{model_path}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return BertConfig(
        hidden_size=hidden,
        num_layers=int(config["num_hidden_layers"]),
        num_heads=heads,
        intermediate_size=int(config["intermediate_size"]),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
        activation=ACTIVATIONS[act],
        vocab_size=int(config["vocab_size"]),
        max_positions=int(config.get("max_position_embeddings", 512)),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
    )


# our name -> the checkpoint's name (relative to the model prefix); "{i}" is the layer index
_EMBEDDINGS = {
    "word": "embeddings.word_embeddings.weight",
    "position": "embeddings.position_embeddings.weight",
    "token_type": "embeddings.token_type_embeddings.weight",
    "ln_w": "embeddings.LayerNorm.weight",
    "ln_b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q_w": "attention.self.query.weight", "q_b": "attention.self.query.bias",
    "k_w": "attention.self.key.weight", "k_b": "attention.self.key.bias",
    "v_w": "attention.self.value.weight", "v_b": "attention.self.value.bias",
    "o_w": "attention.output.dense.weight", "o_b": "attention.output.dense.bias",
    "ln1_w": "attention.output.LayerNorm.weight", "ln1_b": "attention.output.LayerNorm.bias",
    "up_w": "intermediate.dense.weight", "up_b": "intermediate.dense.bias",
    "down_w": "output.dense.weight", "down_b": "output.dense.bias",
    "ln2_w": "output.LayerNorm.weight", "ln2_b": "output.LayerNorm.bias",
}
_LINEAR_WEIGHTS = {"q_w", "k_w", "v_w", "o_w", "up_w", "down_w"}  # stored [out, in] like torch.nn.Linear


def load_bert_weights(model_path: str | Path, config: BertConfig) -> dict:
    """{"embeddings": {name: array}, "layers": [{name: array}, ...]}, float32, linear weights as [in, out]."""
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for file in sorted(Path(model_path).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    anchor = _EMBEDDINGS["word"]
    prefixes = [name[: -len(anchor)] for name in tensors if name.endswith(anchor)]
    if len(prefixes) != 1:
        raise UsageError(f"{model_path}: cannot find one {anchor} in the safetensors weights")
    prefix = prefixes[0]

    def take(name: str, transpose: bool = False) -> np.ndarray:
        full = prefix + name
        if full not in tensors:
            raise UsageError(f"{model_path}: weights lack {full!r}; re-save the model with save_pretrained")
        array = tensors[full].astype(np.float32)
        return np.ascontiguousarray(array.T) if transpose else array

    embeddings = {key: take(name) for key, name in _EMBEDDINGS.items()}
    layers = [{key: take(f"encoder.layer.{i}.{name}", transpose=key in _LINEAR_WEIGHTS) for key, name in _LAYER.items()}
              for i in range(config.num_layers)]
    if embeddings["word"].shape != (config.vocab_size, config.hidden_size):
        raise UsageError(f"{model_path}: word embeddings are {embeddings['word'].shape}, config.json says "
                         f"({config.vocab_size}, {config.hidden_size})")
    return {"embeddings": embeddings, "layers": layers}
