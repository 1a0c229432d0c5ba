"""Tokenisation with the model's own tokenizer.json, to a fixed length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from enginebench.workloads.batch import TokenBatch


def load_tokenizer(model_path: str) -> Tokenizer:
    return Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))


def encode_fixed(tokenizer: Tokenizer, texts: list[str], seq_len: int) -> TokenBatch:
    """Truncate or pad every text to exactly seq_len tokens (special tokens included)."""
    tok = Tokenizer.from_str(tokenizer.to_str())  # a copy: padding/truncation settings are global state
    tok.enable_truncation(max_length=seq_len)
    pad_id = tok.token_to_id("[PAD]")
    if pad_id is None:
        pad_id = tok.token_to_id("<pad>") or 0
    tok.enable_padding(length=seq_len, pad_id=pad_id)
    encodings = tok.encode_batch(texts)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    types = np.array([e.type_ids for e in encodings], dtype=np.int64)
    return TokenBatch(ids, mask, types)


def token_lengths(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return [len(e.ids) for e in tok.encode_batch(texts)]
