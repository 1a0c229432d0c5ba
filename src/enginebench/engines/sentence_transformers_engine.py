"""sentence-transformers: `SentenceTransformer.encode(texts)` as users run it today, the baseline to beat.

Unlike every other engine, the timed call starts from text: `encode` tokenises, runs the transformer, pools
and normalises, so its figures include the tokenisation the others leave out. That is the point of the
baseline: "how much faster than what we run now" compares against the whole call a user makes.

Workload batches are token ids; prepare() decodes each row's real tokens (padding and special tokens dropped)
back to text with the model's tokenizer, outside timing. The decoded text re-tokenises to the very same ids
for the bundled workloads (checked in tests/engines/test_sentence_transformers.py), so every engine still sees
the same inputs, truncated to the same length, and padded to the same width: the batch's (`--seq-len` under
`--padding fixed`, its longest input under `dynamic`), through sentence-transformers' own
`processing_kwargs` (`padding="max_length"`). Left to itself `encode` pads to the longest input whatever the
workload says, which under fixed padding computed fewer positions than the other engines (on `titles` 14.9 of 16
at batch 4): a speed-up over a baseline that did less work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.torch_eager import TorchEngine
from enginebench.engines.torch_readback import torch_executed_precision, torch_threads
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch
from enginebench.workloads.tokenize import load_tokenizer

TIMED_CALL = ("SentenceTransformer.encode(texts, batch_size=len(texts), convert_to_numpy=True, processing_kwargs="
              "{'text': {'padding': 'max_length', 'max_length': the batch's width}}): tokenisation + transformer "
              "forward + mean pooling + normalisation + copy to numpy")


def _devices() -> tuple[str, ...]:
    return SentenceTransformersEngine.devices()


@dataclass(frozen=True)
class SentenceTransformersOptions(EngineOptions):
    device: str = field(default="cpu", metadata={"choices": _devices})  # SentenceTransformer(device=...)
    interop_threads: int = field(default=1, metadata={"min": 1})


@dataclass(frozen=True)
class EncodeCall:
    """A prepared batch: the texts, and the width every engine computes for it (the workload's padding)."""

    texts: list[str]
    width: int


class SentenceTransformersSession(Session):
    def __init__(self, model, tokenizer, executed_precision: str, details: dict):
        self.model = model
        self.tokenizer = tokenizer  # the `tokenizers` copy used to decode batches back to text
        self.executed_precision = executed_precision
        self.details = details

    def prepare(self, batch: TokenBatch) -> EncodeCall:
        rows = zip(batch.input_ids, batch.attention_mask.astype(bool))
        texts = self.tokenizer.decode_batch([ids[mask].tolist() for ids, mask in rows], skip_special_tokens=True)
        return EncodeCall(texts, batch.seq_len)

    def run(self, prepared: EncodeCall) -> np.ndarray:
        # The workload's length, not the model's default (256 for MiniLM), so long inputs are cut where the
        # other engines' are; an attribute check, negligible next to the call
        if self.model.max_seq_length != prepared.width:
            self.model.max_seq_length = prepared.width
        return self.model.encode(prepared.texts, batch_size=len(prepared.texts), convert_to_numpy=True,
                                 show_progress_bar=False,
                                 processing_kwargs={"text": {"padding": "max_length", "max_length": prepared.width}})


class SentenceTransformersEngine(Engine):
    name = "sentence-transformers"
    library = "sentence-transformers"
    requires = ("sentence_transformers", "torch", "transformers")
    extra = "sentence-transformers"
    precisions = ("fp32", "bf16")
    formats = ("safetensors", "sentence-transformers folder")
    Options = SentenceTransformersOptions
    library_precisions = ("fp16",)
    backend = "PyTorch eager (its BLAS / oneDNN) + HF tokenizers"
    parallelism = "data parallel (multi-process pool)"
    training = "yes"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        return TorchEngine.devices()

    def load(self, model: ModelSpec, precision: str, options: SentenceTransformersOptions) -> Session:
        import importlib

        importlib.import_module("enginebench.models.torch_encoder")  # sets HF_HUB_OFFLINE and quiet logging first
        import torch
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        torch.set_num_threads(options.threads)
        try:
            torch.set_num_interop_threads(options.interop_threads)
        except RuntimeError:
            pass  # can only be set once per process, before any parallel work
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        st_model, modules = _sentence_transformer(Path(model.path), options.device, dtype)
        tokenizer = load_tokenizer(model.path)
        tokenizer.no_padding()
        tokenizer.no_truncation()
        details = {
            "timed_call": TIMED_CALL,
            "modules": modules,
            "inputs": "token ids decoded back to text in prepare() (outside timing), re-tokenised inside the call",
            "device": str(st_model.device),
            "attention": _attention(st_model),
            "executed_precision_source": "the model's Linear layers' weight dtype after loading",
            **torch_threads(torch),
        }
        return SentenceTransformersSession(st_model, tokenizer, torch_executed_precision(st_model), details)


def _sentence_transformer(path: Path, device: str, dtype):
    """(SentenceTransformer, how its modules were chosen). A folder saved by sentence-transformers
    (modules.json) loads as users load it; a plain transformers folder gets the reference computation:
    Transformer + mean Pooling + Normalize, what models/torch_encoder.py's SentenceEncoder computes."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    if (path / "modules.json").is_file():
        st = SentenceTransformer(str(path), device=device, local_files_only=True, model_kwargs={"dtype": dtype})
        return st, f"the folder's modules.json: {', '.join(type(m).__name__ for m in st)}"
    transformer = Transformer(str(path), model_kwargs={"dtype": dtype, "local_files_only": True},
                              processor_kwargs={"local_files_only": True})
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st = SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)
    return st, "built (no modules.json): Transformer, Pooling(mean), Normalize"


def _attention(st_model) -> str:
    config = getattr(getattr(st_model[0], "auto_model", None), "config", None)
    return getattr(config, "_attn_implementation", None) or "unknown"
