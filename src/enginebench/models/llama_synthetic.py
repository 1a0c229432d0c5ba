"""Llama-shaped decoders with deterministic random weights: any size can be benchmarked without a download.

Speed depends on the shapes, not on what the weights learnt, so a Llama-2-7B-shaped model with random
weights gives the tokens/s of Llama-2-7B. The weights are drawn so that activations and logits keep a
useful scale (std 1/sqrt(fan_in) per linear layer, unit-variance embeddings): attention is not uniform and
the top token is well separated, so quantization error shows up in fidelity numbers as it would on a
trained model.

Tensors are generated and written one at a time (shards of at most MAX_SHARD_BYTES), so a 7B model in
float16 never needs more than one shard (2 GiB) in memory.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from enginebench.errors import UsageError
from enginebench.models.safetensors_shards import MAX_SHARD_BYTES, write_shards
from enginebench.workloads.corpus import python_docs_paragraphs

GENERATOR_VERSION = "1"  # bump when the weights or the tokenizer drawn for a given config and seed change

TINY_LLAMA = {
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 256,
}
LLAMA2_7B = {
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
}

_DEFAULTS = {
    "num_key_value_heads": None,  # = num_attention_heads
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": False, "hidden_act": "silu",
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in Llama-2
_DTYPES = {"float32": np.float32, "float16": np.float16}


def full_config(config: dict) -> dict:
    """A complete config.json for LlamaForCausalLM from the shape fields; UsageError when it is not a valid Llama."""
    model_type = config.get("model_type", "llama")
    if model_type != "llama":
        raise UsageError(f"--llm-config describes model_type {model_type!r}: only Llama shapes can be generated")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise UsageError(f"the Llama config lacks {', '.join(missing)}: give at least {', '.join(_REQUIRED)}")
    out = {**_DEFAULTS, **{k: v for k, v in config.items() if k not in ("architectures", "model_type")}}
    if out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = out["num_attention_heads"]
    for key in (*_REQUIRED, "num_key_value_heads", "max_position_embeddings"):
        if not isinstance(out[key], int) or out[key] <= 0:
            raise UsageError(f"Llama config field {key} must be a positive integer, got {out[key]!r}")
    hidden, heads, kv = out["hidden_size"], out["num_attention_heads"], out["num_key_value_heads"]
    if hidden % heads or heads % kv or (hidden // heads) % 2:
        raise UsageError(f"Llama config: hidden_size {hidden} must split into {heads} heads of even size, "
                         f"and num_attention_heads into groups of num_key_value_heads {kv}")
    if out["vocab_size"] < 300:
        raise UsageError("Llama config: vocab_size must be at least 300 (256 byte tokens, specials, merges)")
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "bos_token_id": 1, "eos_token_id": 2,
            "attention_bias": False, "mlp_bias": False, **out}


def parameter_count(config: dict) -> int:
    c = full_config(config)
    return sum(int(np.prod(shape)) for _, shape, _ in tensor_plan(c))


def tensor_plan(c: dict) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, shape, std) of every tensor, in file order; std 0 means an RMSNorm weight (around 1)."""
    h, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    plan = [("model.embed_tokens.weight", (v, h), 1.0)]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        plan += [
            (p + "input_layernorm.weight", (h,), 0.0),
            (p + "self_attn.q_proj.weight", (h, h), h ** -0.5),
            (p + "self_attn.k_proj.weight", (kv, h), h ** -0.5),
            (p + "self_attn.v_proj.weight", (kv, h), h ** -0.5),
            (p + "self_attn.o_proj.weight", (h, h), h ** -0.5),
            (p + "post_attention_layernorm.weight", (h,), 0.0),
            (p + "mlp.gate_proj.weight", (f, h), h ** -0.5),
            (p + "mlp.up_proj.weight", (f, h), h ** -0.5),
            (p + "mlp.down_proj.weight", (h, f), f ** -0.5),
        ]
    plan.append(("model.norm.weight", (h,), 0.0))
    if not c["tie_word_embeddings"]:
        plan.append(("lm_head.weight", (v, h), 2.0 * h ** -0.5))  # logits with std ~2: a clear top token
    return plan


def _draw(name: str, shape: tuple[int, ...], std: float, seed: int, dtype) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # per tensor: independent of file order
    if std == 0.0:
        values = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
    else:
        values = rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
    return values.astype(dtype, copy=False)


def write_synthetic_llama(out_dir: Path, config: dict, seed: int = 0, dtype: str = "float32",
                          max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """Write a Hugging Face Llama folder (config.json, safetensors, tokenizer.json) with random weights."""
    if dtype not in _DTYPES:
        raise UsageError(f"synthetic Llama dtype {dtype!r} is not supported: use {' or '.join(_DTYPES)}")
    c = full_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np_dtype = _DTYPES[dtype]
    itemsize = np.dtype(np_dtype).itemsize
    plan = {name: (shape, std) for name, shape, std in tensor_plan(c)}
    write_shards(out_dir, [(name, int(np.prod(shape)) * itemsize) for name, (shape, _) in plan.items()],
                 lambda name: _draw(name, *plan[name], seed, np_dtype), max_shard_bytes)

    (out_dir / "config.json").write_text(json.dumps({**c, "torch_dtype": dtype}, indent=1))
    synthetic_tokenizer(c["vocab_size"]).save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": False, "model_max_length": c["max_position_embeddings"]}, indent=1))


def synthetic_tokenizer(vocab_size: int):
    """A GPT-2-style byte-level BPE trained on the Python docs corpus, with at most vocab_size ids.

    Byte-level means every text encodes (no unknown token), and llama.cpp's "gpt2" pre-tokenizer splits text
    the same way, so the tokenizer travels into GGUF files unchanged.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(_SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(python_docs_paragraphs(), trainer=trainer)
    return tokenizer


__all__ = ["TINY_LLAMA", "LLAMA2_7B", "GENERATOR_VERSION", "write_synthetic_llama", "full_config",
           "parameter_count", "synthetic_tokenizer", "tensor_plan"]
