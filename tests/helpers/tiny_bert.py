"""A tiny randomly initialised BERT folder (sizes unlike MiniLM's) and a batch that exercises every input."""

from __future__ import annotations

import shutil

import numpy as np

from enginebench.workloads.batch import TokenBatch

TINY_SIZES = dict(hidden_size=48, num_attention_heads=4, num_hidden_layers=2, intermediate_size=80,
                  max_position_embeddings=40, type_vocab_size=3, layer_norm_eps=1e-7)


def make_tiny_bert(folder, tokenizer_from: str, hidden_act: str = "gelu"):
    """Save a random BertModel with MiniLM's vocabulary size (so its tokenizer.json fits) into `folder`."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    vocab = len(open(f"{tokenizer_from}/vocab.txt", encoding="utf-8").read().splitlines())
    config = BertConfig(vocab_size=vocab, hidden_act=hidden_act, initializer_range=0.2, **TINY_SIZES)
    BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    shutil.copy(f"{tokenizer_from}/tokenizer.json", folder)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(f"{tokenizer_from}/{name}", folder)
    return folder


def mixed_batch(vocab: int = 30522, batch: int = 3, seq: int = 24, seed: int = 0) -> TokenBatch:
    """Right-padded rows of different lengths, with non-zero token types, so masks and types matter."""
    rng = np.random.default_rng(seed)
    lengths = np.array([seq, seq // 2, 5])[:batch]
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1000, vocab, size=(batch, seq)) * mask
    types = (np.arange(seq)[None, :] >= lengths[:, None] // 2).astype(np.int64) * mask
    types[0] *= 2  # a third token type: the tiny model has type_vocab_size 3
    return TokenBatch(ids.astype(np.int64), mask, types.astype(np.int64))
