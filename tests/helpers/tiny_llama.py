"""A tiny synthetic Llama and its transformers fp32 logits: the reference the decoder engines are tested against."""

from __future__ import annotations

import numpy as np


def tiny_llama_spec():
    from enginebench.models.decoder_folder import synthetic_decoder
    from enginebench.models.llama_synthetic import TINY_LLAMA

    return synthetic_decoder(TINY_LLAMA, "tiny-llama")


def prompt_ids(spec, batch: int = 2, length: int = 24, seed: int = 0) -> np.ndarray:
    vocab = spec_vocab(spec)
    return np.random.default_rng(seed).integers(3, vocab, size=(batch, length), dtype=np.int64)


def spec_vocab(spec) -> int:
    import json
    from pathlib import Path

    return int(json.loads((Path(spec.path) / "config.json").read_text())["vocab_size"])


class TransformersReference:
    """transformers LlamaForCausalLM in float32 on the same folder."""

    def __init__(self, spec):
        import torch
        from transformers import LlamaForCausalLM

        self.torch = torch
        self.model = LlamaForCausalLM.from_pretrained(spec.path, dtype=torch.float32).eval()

    def logits(self, ids: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(np.asarray(ids, dtype=np.int64))).logits.float().numpy()

    def greedy(self, prompt: np.ndarray, new_tokens: int) -> np.ndarray:
        """Greedy continuation by full forwards (no cache): tokens [batch, new_tokens]."""
        seq = np.asarray(prompt, dtype=np.int64)
        for _ in range(new_tokens):
            seq = np.concatenate([seq, self.logits(seq)[:, -1].argmax(-1)[:, None]], axis=1)
        return seq[:, prompt.shape[1]:]


def forward_error(session, reference: TransformersReference, ids: np.ndarray) -> float:
    """A decoder session's teacher-forced logits against the reference's on `ids`: same shape, float32, and the
    largest absolute difference (returned)."""
    out = session.forward_logits(ids)
    ref = reference.logits(ids)
    assert out.shape == ref.shape and out.dtype == np.float32
    return float(np.abs(out - ref).max())


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).mean())
