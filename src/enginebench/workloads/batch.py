"""Token batches: the one input format every engine receives, identically."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenBatch:
    input_ids: np.ndarray  # int64 [batch, seq_len]
    attention_mask: np.ndarray  # int64 [batch, seq_len], 1 for real tokens
    token_type_ids: np.ndarray  # int64 [batch, seq_len]

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def real_tokens(self) -> int:
        """Tokens that are not padding: what tokens/s counts."""
        return int(self.attention_mask.sum())

    def take(self, rows) -> TokenBatch:
        """The items at `rows` (indices into this batch) as one batch."""
        rows = np.asarray(rows, dtype=np.int64)
        return TokenBatch(*(np.ascontiguousarray(a[rows]) for a in (self.input_ids, self.attention_mask,
                                                                     self.token_type_ids)))

    @property
    def longest(self) -> int:
        """The longest row's real tokens: where a batch trimmed to it ends."""
        return int(self.attention_mask.sum(axis=1).max()) if self.size else 0

    def trimmed(self) -> TokenBatch:
        """The batch cut to its longest real row (dynamic padding, as serving stacks and HF's tokenizers with
        padding=True do). The tokenizer pads on the right, so each row's real tokens are a prefix."""
        end = self.longest
        if end == self.seq_len:
            return self
        return TokenBatch(*(np.ascontiguousarray(a[:, :end]) for a in (self.input_ids, self.attention_mask,
                                                                        self.token_type_ids)))

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}

    def feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        """The arrays a graph takes, by input name (models without token types take only two)."""
        arrays = self.as_dict()
        return {name: arrays[name] for name in names}
