"""The shapes the registered models really run, read from their configs, each labelled with where it comes from.

An encoder (BERT: MiniLM) at batch 1 and 32 × 128 tokens; a Llama decoder's prefill of 128 tokens and its
decode step (1 token against a cache of DECODE_CONTEXT tokens). Dimensions come from the model's config:
config.json for a folder (MiniLM's is in its package), the GGUF header for SmolLM2 (read without converting
the weights), the constant config of the synthetic Llama-2-7B (its weights are never written here).

What is stood in for, said in the label: Llama's projections have no bias (matmul, not linear); its norms are
RMSNorm and its activation SiLU, timed as layer norm and GELU at the same shapes; grouped-query attention is
timed with K and V repeated to every query head; prefill attention has no causal mask (the op has none).
Batched attention is independent per (sequence, head), so batch × heads is the op's H.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from enginebench.errors import UsageError
from enginebench.models import KNOWN_MODELS, _minilm_path
from enginebench.models.decoder_folder import is_decoder_config, smollm2_gguf
from enginebench.models.gguf_llama import gguf_config
from enginebench.models.llama_synthetic import LLAMA2_7B, full_config
from enginebench.scenarios.ops.definitions import Shape

ENCODER_BATCHES = (1, 32)
ENCODER_TOKENS = 128
PREFILL_TOKENS = 128
DECODE_CONTEXT = 512  # cached tokens a decode step attends to
PHASES = {"minilm": ("b1", "b32"), "smollm2-135m": ("prefill", "decode"), "llama2-7b-synthetic": ("decode",)}


@dataclass(frozen=True)
class ModelShape:
    op: str
    shape: Shape
    label: str  # e.g. "minilm b32 FFN up"
    batch: int  # sequences in the model's batch
    tokens: int  # tokens per sequence the model runs in this phase


def model_config(name: str) -> tuple[str, dict]:
    """("encoder" | "decoder", its config) for a registered model name or a local folder / .gguf file."""
    if name == "minilm":
        return "encoder", _read_json(_minilm_path() / "config.json")
    if name == "smollm2-135m":
        return "decoder", _gguf_config(smollm2_gguf())
    if name == "llama2-7b-synthetic":
        return "decoder", full_config(LLAMA2_7B)
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return "decoder", _gguf_config(path)
    if path.is_dir() and (path / "config.json").is_file():
        config = _read_json(path / "config.json")
        return ("decoder" if is_decoder_config(config) else "encoder"), config
    raise UsageError(f"--model {name!r}: give one of {', '.join(KNOWN_MODELS)}, a folder with config.json or a "
                     ".gguf file")


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return config


def _gguf_config(path: Path) -> dict:
    try:
        import gguf
    except ImportError:
        raise UsageError("reading a GGUF header needs the gguf package: pip install 'enginebench[llamacpp]'") from None
    return gguf_config(gguf.GGUFReader(path))


def _dims(config: dict, *keys: str) -> list[int]:
    try:
        return [int(config[k]) for k in keys]
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"the model's config lacks a whole-number {', '.join(keys)}") from None


def encoder_shapes(name: str, config: dict, batch: int, tokens: int = ENCODER_TOKENS) -> list[ModelShape]:
    hidden, heads, ffn = _dims(config, "hidden_size", "num_attention_heads", "intermediate_size")
    d, rows, where = hidden // heads, batch * tokens, f"{name} b{batch}"
    units = batch * heads  # (sequence, head) pairs
    shapes = [
        ("linear", (rows, hidden, hidden), "q/k/v/out projection"),
        ("linear", (rows, hidden, ffn), "FFN up"),
        ("linear", (rows, ffn, hidden), "FFN down"),
        ("matmul", (units, tokens, d, tokens), f"Q·Kᵀ ({batch}×{heads} heads)"),
        ("matmul", (units, tokens, tokens, d), f"P·V ({batch}×{heads} heads)"),
        ("attention", (units, tokens, d), f"self-attention ({batch}×{heads} heads)"),
        ("softmax", (units * tokens, tokens), "attention probabilities"),
        ("layernorm", (rows, hidden), "layer norm"),
        ("gelu", (rows, ffn), "FFN activation"),
        ("add", (rows, hidden), "residual"),
        ("sum", (rows, hidden), "layer norm's row reduction"),
    ]
    return [ModelShape(op, shape, f"{where} {role}", batch, tokens) for op, shape, role in shapes]


def decoder_shapes(name: str, config: dict, phase: str) -> list[ModelShape]:
    """`phase`: "prefill" (PREFILL_TOKENS at once) or "decode" (one token against DECODE_CONTEXT cached)."""
    hidden, heads, ffn, vocab = _dims(config, "hidden_size", "num_attention_heads", "intermediate_size",
                                      "vocab_size")
    kv_heads = int(config.get("num_key_value_heads") or heads)
    d = hidden // heads
    rows = PREFILL_TOKENS if phase == "prefill" else 1
    context = PREFILL_TOKENS if phase == "prefill" else DECODE_CONTEXT
    gqa = f", K/V of {kv_heads} heads repeated" if kv_heads != heads else ""
    shapes = [
        ("matmul", (rows, hidden, hidden), "q/o projection"),
        ("matmul", (rows, hidden, kv_heads * d), "k/v projection"),
        ("matmul", (rows, hidden, ffn), "gate/up projection"),
        ("matmul", (rows, ffn, hidden), "down projection"),
        ("attention", (heads, rows, context, d) if phase == "decode" else (heads, rows, d),
         (f"attention against {context} cached tokens" if phase == "decode" else "self-attention, no causal mask")
         + f" ({heads} heads{gqa})"),
        ("softmax", (heads * rows, context), "attention probabilities"),
        ("layernorm", (rows, hidden), "norm (RMSNorm in Llama, timed as layer norm)"),
        ("gelu", (rows, ffn), "FFN activation (SiLU in Llama, timed as GELU)"),
        ("add", (rows, hidden), "residual"),
        ("sum", (rows, hidden), "RMSNorm's row reduction"),
    ]
    if phase == "decode":  # prefill computes logits for its last token only
        shapes.append(("matmul", (1, hidden, vocab), "LM head"))
    return [ModelShape(op, shape, f"{name} {phase} {role}", 1, rows) for op, shape, role in shapes]


def shapes_for(name: str) -> list[ModelShape]:
    """Every operator shape of the model, in the phases PHASES lists (both kinds' phases for a path)."""
    kind, config = model_config(name)
    label = Path(name).stem if name not in PHASES else name
    if kind == "encoder":
        out = [s for b in ENCODER_BATCHES for s in encoder_shapes(label, config, b)]
    else:
        out = [s for phase in PHASES.get(name, ("prefill", "decode")) for s in decoder_shapes(label, config, phase)]
    return merge_same(out)


def merge_same(shapes: list[ModelShape]) -> list[ModelShape]:
    """One entry per (op, shape): roles that coincide (k/v and q/o projections without GQA) share a label."""
    merged: dict[tuple, ModelShape] = {}
    for s in shapes:
        key = (s.op, s.shape)
        if key in merged:
            first = merged[key]
            merged[key] = ModelShape(s.op, s.shape, _join(first.label, s.label), first.batch, first.tokens)
        else:
            merged[key] = s
    return list(merged.values())


def _join(a: str, b: str) -> str:
    """"m decode q/o projection" + "m decode k/v projection" -> "m decode q/o projection, k/v projection"."""
    common = 0
    for x, y in zip(a.split(" "), b.split(" ")):
        if x != y:
            break
        common += 1
    return a + ", " + " ".join(b.split(" ")[common:])


__all__ = ["ModelShape", "model_config", "encoder_shapes", "decoder_shapes", "shapes_for", "PHASES",
           "ENCODER_BATCHES", "ENCODER_TOKENS", "PREFILL_TOKENS", "DECODE_CONTEXT"]
