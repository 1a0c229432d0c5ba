"""fp32 arithmetic on weights kept in the 16 bits a checkpoint stores them in (`-o torch.fp32_weights=stored`).

Every float16 or bfloat16 value is exactly a float32 value, so a model stored in 16 bits and loaded in float32
holds nothing more than the same model held as stored: only the arithmetic differs. Here every Linear keeps its
stored weight and casts it to float32 for its own call (one Linear's float32 copy alive at a time), the
embedding's looked-up rows are cast to float32, and everything after them (norms, rotary embedding, attention,
the KV cache) then runs in float32 on float32 activations. The logits are those of the model loaded in
float32, in about half its memory: how the fidelity reference of a 7B decoder fits where its float32 weights
do not. Each call pays the casts, so it is a reference, not a way to serve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class UpcastLinear(torch.nn.Linear):
    """A Linear whose stored 16-bit weight is cast to float32 for each call."""

    compute_dtype = torch.float32  # read back by torch_readback: the precision its MatMul computes in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.weight.float(), bias)


def _float_rows(module, inputs, output):
    return output.float()


def upcast_per_call(model) -> None:
    """Turn a transformers decoder loaded in its stored 16-bit dtype into one that computes in float32."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = UpcastLinear  # same parameters and state, another forward
        elif isinstance(module, torch.nn.Embedding):
            module.register_forward_hook(_float_rows)
        elif isinstance(getattr(module, "inv_freq", None), torch.Tensor) and module.inv_freq.dtype != torch.float32:
            # rotary frequencies a 16-bit load rounded (a buffer, not a stored weight): built again in float32,
            # as the float32 model has them
            fresh = type(module)(module.config)
            for name, buffer in fresh.named_buffers(recurse=False):
                setattr(module, name, buffer.to(module.inv_freq.device))
    # RMSNorm weights stay 16-bit: they multiply float32 activations, and type promotion computes in float32


__all__ = ["UpcastLinear", "upcast_per_call"]
