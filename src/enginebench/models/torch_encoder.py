"""The sentence encoder as a PyTorch module: transformer + mean pooling + L2 normalisation.

This is the reference computation (what sentence-transformers does for all-MiniLM-L6-v2) and the graph that
is exported to ONNX, so every engine runs exactly the same function of the same token ids.
"""

from __future__ import annotations

import inspect
import os

# Offline and quiet: weights come from local folders only, and progress bars would pollute our output.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class SentenceEncoder(nn.Module):
    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        # DistilBERT-style models take no token_type_ids; the input list follows the model, not MiniLM.
        self.input_names = ["input_ids", "attention_mask"]
        if "token_type_ids" in inspect.signature(transformer.forward).parameters:
            self.input_names.append("token_type_ids")

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(summed / counts, p=2, dim=1)


def load_sentence_encoder(model_path: str, dtype: torch.dtype = torch.float32, attention: str = "sdpa") -> SentenceEncoder:
    """Load the transformer from safetensors only (never pickle) and wrap it with pooling."""
    from transformers import AutoModel

    transformer = AutoModel.from_pretrained(
        model_path, use_safetensors=True, dtype=dtype, local_files_only=True, attn_implementation=attention
    )
    return SentenceEncoder(transformer).eval()
