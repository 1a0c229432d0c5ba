"""Llama weights between GGUF files and Hugging Face folders, with the `gguf` package.

GGUF -> HF (`gguf_to_hf`): a model that came as GGUF (smollm2-135m, a user's .gguf) gets a Hugging Face
reference folder that every other engine can load: tensors are dequantized to float32 (float16 when float32
would not fit in memory) and the tokenizer is rebuilt from the GGUF metadata as a tokenizer.json.

HF -> GGUF (`hf_to_gguf`): llama.cpp's f32/f16 files are written from the reference folder, tensor by tensor;
the k-quants are then made from them by llama.cpp itself (engines/llamacpp.py).

llama.cpp's converter (convert_hf_to_gguf.py) permutes the rows of q_proj and k_proj so that its rotary
embedding can rotate adjacent pairs (GPT-J style) where Hugging Face rotates the two halves of each head
(GPT-NeoX style); `_permute` / `_unpermute` do and undo exactly that.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from enginebench.errors import UsageError
from enginebench.models.llama_synthetic import full_config, tensor_plan
from enginebench.models.safetensors_shards import iter_tensors, write_shards

CONVERTER_VERSION = "1"  # bump when gguf_to_hf / hf_to_gguf change their output
FP32_LIMIT_BYTES = 8 << 30  # larger models get a float16 reference (24 GiB machines)

# llama.cpp's pre-tokenizer names -> the Hugging Face pre-tokenizer that splits text the same way
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_PRE_TOKENIZERS = {
    "gpt-2": _BYTE_LEVEL,
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
}
_CONTROL, _USER_DEFINED, _UNUSED, _NORMAL = 3, 4, 5, 1  # gguf.TokenType values


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _name_map(config: dict) -> dict[str, str]:
    """Hugging Face tensor name -> GGUF tensor name for every tensor of the model, from gguf's own table."""
    import gguf

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config["num_hidden_layers"])
    return {name: tmap.get_name(name, try_suffixes=(".weight",)) for name, _, _ in tensor_plan(config)}


# ---------------------------------------------------------------- GGUF -> Hugging Face


def _field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_config(reader) -> dict:
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise UsageError(f"the GGUF file holds a {arch!r} model: only Llama-architecture GGUF files are supported")
    a = "llama."
    tokens = _field(reader, "tokenizer.ggml.tokens") or []
    tensor_names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in tensor_names:
        raise UsageError("the GGUF file uses Llama-3.1 rope scaling (rope_freqs), which is not supported yet")
    heads = int(_field(reader, a + "attention.head_count"))
    config = {
        "hidden_size": int(_field(reader, a + "embedding_length")),
        "intermediate_size": int(_field(reader, a + "feed_forward_length")),
        "num_hidden_layers": int(_field(reader, a + "block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_field(reader, a + "attention.head_count_kv", heads)),
        "vocab_size": len(tokens),
        "max_position_embeddings": int(_field(reader, a + "context_length", 2048)),
        "rms_norm_eps": float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_field(reader, a + "rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
    }
    out = full_config(config)
    for key, gguf_key in (("bos_token_id", "tokenizer.ggml.bos_token_id"), ("eos_token_id", "tokenizer.ggml.eos_token_id")):
        out[key] = _field(reader, gguf_key, out[key])
    return out


def gguf_tokenizer(reader):
    """A `tokenizers.Tokenizer` equal to the GGUF's GPT-2-style byte-level BPE."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = _field(reader, "tokenizer.ggml.model")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in _PRE_TOKENIZERS:
        raise UsageError(f"the GGUF tokenizer ({kind}, pre-tokenizer {pre}) is not supported: only byte-level BPE "
                         f"with pre-tokenizer {' or '.join(_PRE_TOKENIZERS)}; give the Hugging Face folder instead")
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type") or [_NORMAL] * len(tokens)
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    tokenizer.pre_tokenizer = _pre_tokenizer(_PRE_TOKENIZERS[pre])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t, k in zip(tokens, types) if k == _CONTROL])
    tokenizer.add_tokens([AddedToken(t, special=False) for t, k in zip(tokens, types) if k == _USER_DEFINED])
    bos = _field(reader, "tokenizer.ggml.bos_token_id")
    if _field(reader, "tokenizer.ggml.add_bos_token", False) and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B", special_tokens=[(tokens[bos], bos)])
    return tokenizer


def _pre_tokenizer(spec: dict):
    """Build the `tokenizers` pre-tokenizer described by one of the _PRE_TOKENIZERS entries."""
    from tokenizers import pre_tokenizers

    if spec["type"] == "Sequence":
        return pre_tokenizers.Sequence([_pre_tokenizer(s) for s in spec["pretokenizers"]])
    if spec["type"] == "Digits":
        return pre_tokenizers.Digits(individual_digits=spec["individual_digits"])
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def gguf_to_hf(gguf_file: Path, out_dir: Path) -> None:
    """Write the Hugging Face folder of a Llama GGUF file: dequantized weights, config.json, tokenizer.json."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(gguf_file))
    except (ValueError, OSError) as e:
        raise UsageError(f"{gguf_file} is not a readable GGUF file ({e}); re-download or re-convert it") from None
    config = gguf_config(reader)
    params = sum(int(np.prod(t.shape)) for t in reader.tensors)
    dtype = np.float32 if params * 4 <= FP32_LIMIT_BYTES else np.float16
    by_gguf_name = {t.name: t for t in reader.tensors}
    names = _name_map(config)
    wanted = [n for n, _, _ in tensor_plan(config)]
    missing = [names[n] for n in wanted if names[n] not in by_gguf_name]
    if missing:
        raise UsageError(f"the GGUF file lacks tensors {', '.join(missing[:3])}: is it a complete Llama model?")

    def produce(name: str) -> np.ndarray:
        t = by_gguf_name[names[name]]
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        if name.endswith("q_proj.weight"):
            w = _unpermute(w, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            w = _unpermute(w, config["num_key_value_heads"])
        return w.astype(dtype, copy=False)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    itemsize = np.dtype(dtype).itemsize
    write_shards(out_dir, [(n, int(np.prod(by_gguf_name[names[n]].shape)) * itemsize) for n in wanted], produce)
    dtype_name = np.dtype(dtype).name
    (out_dir / "config.json").write_text(json.dumps({**config, "torch_dtype": dtype_name}, indent=1))
    gguf_tokenizer(reader).save(str(out_dir / "tokenizer.json"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokens[config["bos_token_id"]],
        "eos_token": tokens[config["eos_token_id"]], "model_max_length": config["max_position_embeddings"]}, indent=1))


# ---------------------------------------------------------------- Hugging Face -> GGUF


def _tokenizer_for_gguf(folder: Path, vocab_size: int) -> dict:
    """tokens / types / merges / pre-tokenizer of a byte-level BPE tokenizer.json, padded to vocab_size."""
    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec.get("model") or {}
    pre = next((name for name, p in _PRE_TOKENIZERS.items() if _same_pre(spec.get("pre_tokenizer"), p)), None)
    if model.get("type") != "BPE" or pre is None:
        raise UsageError(f"{folder}'s tokenizer is not a GPT-2-style byte-level BPE: llama.cpp files can only be "
                         "written for those here (convert the model with llama.cpp's convert_hf_to_gguf.py)")
    vocab = dict(model["vocab"])
    special = set()
    for added in spec.get("added_tokens") or []:
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            special.add(added["id"])
    if max(vocab.values()) >= vocab_size:
        raise UsageError(f"{folder}'s tokenizer has ids beyond the model's vocab_size {vocab_size}")
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [_UNUSED] * vocab_size
    for token, i in vocab.items():
        tokens[i] = token
        types[i] = _CONTROL if i in special else _NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre}


def _same_pre(actual: dict | None, expected: dict) -> bool:
    if not actual or actual.get("type") != expected["type"]:
        return False
    if expected["type"] == "Sequence":
        inner = actual.get("pretokenizers") or []
        return len(inner) == len(expected["pretokenizers"]) and all(
            _same_pre(a, e) for a, e in zip(inner, expected["pretokenizers"]))
    if expected["type"] == "Digits":
        return bool(actual.get("individual_digits")) == expected["individual_digits"]
    return not actual.get("add_prefix_space") and actual.get("use_regex", True)


def hf_to_gguf(folder: Path, out_file: Path, ftype: str) -> None:
    """Write an f32 or f16 GGUF of a Hugging Face Llama folder, streaming one tensor at a time."""
    import gguf

    if ftype not in ("f32", "f16"):
        raise ValueError(f"hf_to_gguf writes f32 or f16, not {ftype}")
    folder = Path(folder)
    config = full_config(json.loads((folder / "config.json").read_text()))
    tok = _tokenizer_for_gguf(folder, config["vocab_size"])
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]

    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config["rope_theta"])
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if ftype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(tok["pre"])
    writer.add_token_list(tok["tokens"])
    writer.add_token_types(tok["types"])
    writer.add_token_merges(tok["merges"])
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_add_bos_token(False)

    names = _name_map(config)
    plan = tensor_plan(config)
    wide = np.float32 if ftype == "f32" else np.float16

    def target(shape: tuple[int, ...]):
        return np.float32 if len(shape) == 1 else wide  # llama.cpp keeps norm weights in f32

    for name, shape, _ in plan:
        dtype = target(shape)
        writer.add_tensor_info(names[name], shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for name, w in iter_tensors(folder, [n for n, _, _ in plan]):
        if name.endswith("q_proj.weight"):
            w = _permute(w, heads)
        elif name.endswith("k_proj.weight"):
            w = _permute(w, kv_heads)
        writer.write_tensor_data(np.ascontiguousarray(w.astype(target(w.shape), copy=False)))
    writer.close()


__all__ = ["CONVERTER_VERSION", "gguf_to_hf", "hf_to_gguf", "gguf_config", "gguf_tokenizer"]
