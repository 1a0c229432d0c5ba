"""Export a Llama-family decoder to ONNX once, with its KV cache as inputs and outputs, cached by model content.

One graph serves prefill and decode: the past length is a dynamic axis that may be 0 (a prefill feeds empty
past tensors), so ONNX Runtime loads and optimizes one graph, and decode steps feed the previous call's
`present.*` outputs back as `past_key_values.*` without leaving ONNX Runtime (OrtValues, no numpy copies).
Two graphs (a prefill without past inputs and a decode with them) would hold every weight twice in memory;
the only thing a separate prefill graph saves is concatenating an empty past, which costs nothing.

Graph signature (L layers, K key/value heads, D head size):
  inputs   input_ids [batch, tokens] int64
           past_key_values.{i}.key / .value [batch, K, past, D] float32, i < L (past may be 0)
           logits_positions [kept] int64: which of this call's positions get logits (the last one for a
           prefill or a decode step, every one for a teacher-forced forward): the vocabulary projection
           runs on those rows only, as transformers' logits_to_keep does
  outputs  logits [batch, kept, vocab] float32
           present.{i}.key / .value [batch, K, past + tokens, D] float32

Positions come from the past length (rotary angles of past .. past + tokens - 1) and attention is causal over
past + tokens keys; there is no padding mask, so every row of a batch has the same length (as every workload
here gives them). Each call concatenates the new keys and values to the past (a copy of the cache per step, as
Hugging Face's own ONNX decoders do; ONNX Runtime's GroupQueryAttention would update a preallocated buffer in
place, but only through com.microsoft ops that the torch exporter does not emit).

The forward is written here over the transformers model's own modules (embeddings, RMSNorm, projections, its
rotary embedding so any rope scaling it implements carries over, MLP), with attention spelled out so the
cache is explicit; every position or mask is computed from tensors, never from Python integers, so the
TorchScript exporter keeps the token and past axes dynamic. The export runs in its own process, so the engine
that loads the file never holds PyTorch's copy of the weights.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

from enginebench.models.artifacts import artifact_key, cached_artifact, convert_in_subprocess
from enginebench.models.spec import ModelSpec

OPSET = 17
EXPORTER = "torch.onnx-legacy"  # TorchScript: seconds for SmolLM2 where the dynamo exporter takes minutes
EXPORT_FORMAT_VERSION = "1"  # bump when the exported graph changes (inputs, outputs, opset)
ONNX_FILE = "decoder.onnx"
SIGNATURE_FILE = "signature.json"  # layer count, key/value heads, head size, vocabulary: read by the session


def onnx_decoder(model: ModelSpec) -> tuple[Path, dict]:
    """Path of the exported decoder.onnx and facts about the export (cached or not, seconds spent)."""
    key = onnx_decoder_key(model)
    started = time.perf_counter()
    folder, cached = cached_artifact("onnx-decoder", key, lambda out: convert_in_subprocess(
        "enginebench.models.onnx_decoder_export", model.path, str(out), what="ONNX decoder export"))
    details = {
        "onnx_cached": cached, "onnx_export_s": round(time.perf_counter() - started, 3),
        "exporter": f"{EXPORTER} (torch {metadata.version('torch')}, opset {OPSET}), KV cache as inputs/outputs",
        "onnx_path": str(folder / ONNX_FILE),
    }
    return folder / ONNX_FILE, details


def onnx_decoder_key(model: ModelSpec) -> str:
    return artifact_key(model.content_hash, "decoder", EXPORTER, metadata.version("torch"),
                        metadata.version("transformers"), str(OPSET), EXPORT_FORMAT_VERSION)


def read_signature(onnx_file: Path) -> dict:
    return json.loads((Path(onnx_file).parent / SIGNATURE_FILE).read_text())


def cache_names(layers: int) -> tuple[list[str], list[str]]:
    """(past input names, present output names), key then value per layer."""
    past = [f"past_key_values.{i}.{kind}" for i in range(layers) for kind in ("key", "value")]
    return past, [name.replace("past_key_values", "present") for name in past]


def _decoder_module(llm, torch):
    """A torch.nn.Module whose forward is the exported signature (see the module docstring)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    config = llm.config
    heads = int(config.num_attention_heads)
    kv_heads = int(config.num_key_value_heads or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    group = heads // kv_heads
    scale = head_dim ** -0.5

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.llm = llm

        def forward(self, input_ids, *args):
            *past, logits_positions = args
            inner = self.llm.model
            x = inner.embed_tokens(input_ids)
            # positions past .. past + n - 1 from tensors only (the exporter keeps both axes dynamic)
            past_len = torch.ones_like(past[0][0, 0, :, 0]).sum()
            q_pos = torch.cumsum(torch.ones_like(input_ids[0]), 0) - 1 + past_len.to(torch.int64)
            cos, sin = inner.rotary_emb(x, q_pos[None, :])
            presents = []
            for i, layer in enumerate(inner.layers):
                attn = layer.self_attn
                h = layer.input_layernorm(x)
                q = attn.q_proj(h).unflatten(-1, (heads, head_dim)).transpose(1, 2)  # [b, H, n, D]
                k = attn.k_proj(h).unflatten(-1, (kv_heads, head_dim)).transpose(1, 2)  # [b, K, n, D]
                v = attn.v_proj(h).unflatten(-1, (kv_heads, head_dim)).transpose(1, 2)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
                k = torch.cat([past[2 * i], k], dim=2)  # [b, K, past + n, D]
                v = torch.cat([past[2 * i + 1], v], dim=2)
                presents += [k, v]
                k_pos = torch.cumsum(torch.ones_like(k[0, 0, :, 0], dtype=torch.int64), 0) - 1
                allowed = k_pos[None, :] <= q_pos[:, None]  # [n, past + n]: causal over the whole context
                qg = q.unflatten(1, (kv_heads, group))  # [b, K, G, n, D]: each K/V head serves G query heads
                scores = torch.matmul(qg, k.unsqueeze(2).transpose(-1, -2)) * scale  # [b, K, G, n, past + n]
                scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
                context = torch.matmul(torch.softmax(scores, dim=-1), v.unsqueeze(2))  # [b, K, G, n, D]
                context = context.flatten(1, 2).transpose(1, 2).flatten(2)  # [b, n, H * D]
                x = x + attn.o_proj(context)
                x = x + layer.mlp(layer.post_attention_layernorm(x))
            x = inner.norm(torch.index_select(x, 1, logits_positions))
            return (self.llm.lm_head(x), *presents)

    return Decoder().eval(), {"layers": int(config.num_hidden_layers), "kv_heads": kv_heads, "head_dim": head_dim,
                              "heads": heads, "vocab": int(config.vocab_size),
                              "max_positions": int(getattr(config, "max_position_embeddings", 2048))}


def export(model_path: str, out: Path) -> None:
    import warnings

    import torch
    from transformers import LlamaForCausalLM

    llm = LlamaForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True).eval()
    module, signature = _decoder_module(llm, torch)
    past_names, present_names = cache_names(signature["layers"])
    batch, tokens, past_len = 2, 3, 5  # distinct sizes, none 0 or 1, so the tracer specializes none of them
    past = [torch.zeros(batch, signature["kv_heads"], past_len, signature["head_dim"]) for _ in past_names]
    example = (torch.ones(batch, tokens, dtype=torch.int64), *past, torch.arange(tokens, dtype=torch.int64))
    dynamic = {"input_ids": {0: "batch", 1: "tokens"}, "logits_positions": {0: "kept"},
               "logits": {0: "batch", 1: "kept"}}
    dynamic.update({name: {0: "batch", 2: "past"} for name in past_names})
    dynamic.update({name: {0: "batch", 2: "total"} for name in present_names})
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(out / ONNX_FILE),
                          input_names=["input_ids", *past_names, "logits_positions"],
                          output_names=["logits", *present_names], dynamic_axes=dynamic, opset_version=OPSET,
                          dynamo=False)
    (out / SIGNATURE_FILE).write_text(json.dumps(signature))


if __name__ == "__main__":
    export(sys.argv[1], Path(sys.argv[2]))
