"""PyTorch eager Llama decoder: transformers LlamaForCausalLM with a DynamicCache (the decoder reference).

Precisions: fp32 (the fidelity reference), bf16 (weights and activations in bfloat16), int8 (dynamic
quantization of every nn.Linear: int8 weights, activations quantized per call; embeddings stay fp32).
Dynamic int8 quantizes each activation tensor with one scale, which models with activation outliers do not
survive: on SmolLM2-135M it agrees with fp32 on ~43% of top-1 choices (perplexity 33 -> 148; per-channel
weights or sparing the MLP do not fix it), and the fidelity verdict says so.
"""

from __future__ import annotations

import numpy as np

from enginebench.engines.base import DecoderSession
from enginebench.engines.torch_readback import (TORCH_SOURCE, torch_executed_precision, torch_quantization,
                                                torch_threads, torch_weight_matmuls)
from enginebench.measure.memory import memory_shortfall
from enginebench.models.decoder_folder import stored_weights
from enginebench.models.spec import ModelSpec

DECODER_PRECISIONS = ("fp32", "bf16", "int8")
STORED_16_BIT = ("float16", "bfloat16")


# bytes per parameter while loading: int8 loads fp32 weights, then adds the int8 copies
_LOAD_BYTES_PER_PARAM = {"fp32": 4, "bf16": 2, "int8": 5}
_MEMORY_HEADROOM = 1.2  # activations, KV cache, allocator slack


def why_not_decoder(model: ModelSpec, precision: str, fp32_weights: str = "full") -> str | None:
    """Unknown precision, or weights that would not fit in the memory available now (a 7B model in fp32 would
    get this process, or a neighbour, killed by the out-of-memory killer). `fp32_weights="stored"`: fp32
    arithmetic on the weights as the checkpoint stores them (engines/torch_upcast.py), for 16-bit checkpoints."""
    if precision not in DECODER_PRECISIONS:
        return f"torch runs decoders in {', '.join(DECODER_PRECISIONS)}, not {precision}"
    if precision == "fp32" and fp32_weights == "stored":
        dtype, largest = stored_weights(model)
        if dtype not in STORED_16_BIT:
            return (f"torch fp32_weights=stored needs weights stored in float16 or bfloat16; {model.name}'s are "
                    f"{dtype or 'of mixed dtypes'}: use fp32_weights=full")
        need = model.size_bytes * _MEMORY_HEADROOM + largest * 4  # as stored, plus one Linear's float32 copy
        return memory_shortfall("torch", "fp32 (weights as stored)", model.name, need)
    need = model.params * _LOAD_BYTES_PER_PARAM[precision] * _MEMORY_HEADROOM
    return memory_shortfall("torch", precision, model.name, need)


class TorchDecoderSession(DecoderSession):
    #: what a timed call runs (recorded with each generate result)
    timed_calls = {
        "prefill": "transformers LlamaForCausalLM forward of the prompt under inference_mode, filling a DynamicCache, "
                   "logits of the last position only (logits_to_keep=1) to a float32 numpy array; torch.from_numpy "
                   "of the ids inside, the new DynamicCache (reset) outside",
        "decode": "one LlamaForCausalLM forward of [batch, 1] ids through the DynamicCache (appended in place), "
                  "the logits to a float32 numpy array",
    }

    def __init__(self, model, torch, precision: str, details: dict):
        self.model = model
        self.torch = torch
        self.executed_precision = precision
        self.details = details
        self.vocab_size = int(model.config.vocab_size)
        self.cache = None

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)

    def _step(self, tokens: np.ndarray, keep: int) -> np.ndarray:
        torch = self.torch
        if self.cache is None:
            self.reset()
        ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        with torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True, logits_to_keep=keep)
        self.cache = out.past_key_values
        return out.logits.float().numpy()

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        return self._step(tokens, keep=1)[:, -1]  # only the last position's logits: no wasted lm_head work

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return self._step(tokens, keep=1)[:, -1]

    def forward_logits(self, tokens: np.ndarray) -> np.ndarray:
        torch = self.torch
        ids = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
        with torch.inference_mode():
            return self.model(input_ids=ids, use_cache=False).logits.float().numpy()


def load_torch_decoder(model: ModelSpec, precision: str, options) -> TorchDecoderSession:
    import warnings

    import torch
    from transformers import LlamaForCausalLM

    # transformers 5 renames the forward's past_key_values to `cache` and warns on every call; the old name
    # still works and is what transformers 4.45+ (the extra's floor) understands
    warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)

    reason = why_not_decoder(model, precision, options.fp32_weights)
    if reason:
        raise ValueError(reason)
    as_stored = precision == "fp32" and options.fp32_weights == "stored"
    if as_stored:
        dtype = getattr(torch, stored_weights(model)[0])
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    llm = LlamaForCausalLM.from_pretrained(model.path, dtype=dtype, use_safetensors=True,
                                           attn_implementation=options.attention).eval()
    if as_stored:
        from enginebench.engines.torch_upcast import upcast_per_call

        upcast_per_call(llm)
    if precision == "int8":
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated (torchao replaces it)
            warnings.filterwarnings("ignore", message=".*(deprecated|torchao).*")
            llm = quantize_dynamic(llm, {torch.nn.Linear}, dtype=torch.qint8)
    layers, facts = torch_weight_matmuls(llm)
    details = {"attention": options.attention, "cache": "DynamicCache",
               "weights": _weights_note(precision, dtype, as_stored),
               "executed_precision_source": TORCH_SOURCE, **torch_threads(torch)}
    if precision == "int8":
        details["quantization"] = torch_quantization(llm, layers, facts)
    return TorchDecoderSession(llm, torch, torch_executed_precision(llm, layers, facts), details)


def _weights_note(precision: str, dtype, as_stored: bool) -> str:
    if precision == "int8":
        return "int8 Linear (dynamic quantization), fp32 embeddings"
    if as_stored:
        return (f"{dtype} as stored, each Linear's weight cast to torch.float32 for its call (fp32_weights=stored: "
                "the float32 model's arithmetic in its 16-bit memory)")
    return str(dtype)
