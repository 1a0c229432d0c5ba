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

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "token_type_ids": self.token_type_ids}

    def feeds(self, names: list[str]) -> dict[str, np.ndarray]:
        """The arrays a graph takes, by input name (models without token types take only two)."""
        arrays = self.as_dict()
        return {name: arrays[name] for name in names}
