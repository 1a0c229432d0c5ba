"""CTranslate2: a converted copy of the Hugging Face folder, run by ctranslate2.Encoder (encoders).

load() dispatches on the model's kind, so a decoder path (ctranslate2.Generator) can sit beside the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from enginebench.engines.base import Engine, EngineOptions, Session
from enginebench.engines.ctranslate2_cpu import (ct2_executed_precision, ct2_quantization, load_reading_config,
                                                 session_details)
from enginebench.engines.ctranslate2_decoder import load_ctranslate2_decoder
from enginebench.errors import UsageError
from enginebench.models.ctranslate2_convert import ctranslate2_model
from enginebench.models.spec import ModelSpec
from enginebench.workloads.batch import TokenBatch

# our precision -> (weights quantization at conversion, compute_type at load)
_PRECISIONS = {
    "fp32": (None, "float32"),
    "int8": ("int8", "int8_float32"),
    "bf16": ("bfloat16", "bfloat16"),
    "int16": ("int16", "int16"),
    "fp16": ("float16", "float16"),
}


@dataclass(frozen=True)
class CTranslate2Options(EngineOptions):
    # batches run in parallel; intra_threads is the common `threads`
    inter_threads: int = field(default=1, metadata={"min": 1})


class CTranslate2EncoderSession(Session):
    def __init__(self, encoder, ctranslate2, precision: str, details: dict):
        self.encoder = encoder
        self.ctranslate2 = ctranslate2
        self.executed_precision = precision
        self.details = details

    def prepare(self, batch: TokenBatch):
        # CTranslate2 takes right-aligned dense ids plus lengths: move each row's real tokens to the front
        keep = batch.attention_mask.astype(bool)
        lengths = keep.sum(axis=1).astype(np.int32)
        ids = np.zeros(batch.input_ids.shape, dtype=np.int32)
        types = np.zeros(batch.input_ids.shape, dtype=np.int32)
        for row in range(batch.size):
            ids[row, : lengths[row]] = batch.input_ids[row, keep[row]]
            types[row, : lengths[row]] = batch.token_type_ids[row, keep[row]]
        pool_mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.float32)[..., None]
        # from_array shares the numpy buffers: they travel with the StorageViews so they outlive the call
        views = (self.ctranslate2.StorageView.from_array(ids), self.ctranslate2.StorageView.from_array(lengths))
        return views, types.tolist(), pool_mask, (ids, lengths)

    def run(self, prepared) -> np.ndarray:
        (ids, lengths), types, pool_mask, _buffers = prepared
        hidden = np.asarray(self.encoder.forward_batch(ids, lengths, token_type_ids=types).last_hidden_state,
                            dtype=np.float32)
        pool_mask = pool_mask[:, : hidden.shape[1]]  # the output may stop at the longest real sequence
        pooled = (hidden * pool_mask).sum(axis=1) / np.maximum(pool_mask.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)


class CTranslate2Engine(Engine):
    name = "ctranslate2"
    prepares = "converts the model to CTranslate2"
    library = "ctranslate2"
    requires = ("ctranslate2", "torch", "transformers")  # transformers (with torch) converts the checkpoint
    extra = "ctranslate2"
    precisions = tuple(_PRECISIONS)
    formats = ("ctranslate2",)
    Options = CTranslate2Options
    model_kinds = ("encoder", "decoder")
    library_precisions = ("int4",)  # AWQ int4, CUDA only
    backend = "its own kernels over oneDNN / Intel MKL, OpenBLAS or Ruy on CPU; cuBLAS on CUDA"
    parallelism = "tensor parallel across GPUs (tensor_parallel=True)"
    training = "no"

    @classmethod
    def devices(cls) -> tuple[str, ...]:
        import ctranslate2

        return ("cpu", "cuda") if ctranslate2.get_cuda_device_count() > 0 else ("cpu",)

    @classmethod
    def why_not_precision(cls, precision: str) -> str | None:
        reason = super().why_not_precision(precision)
        if reason or not cls.installed():
            return reason
        import ctranslate2

        compute_type = _PRECISIONS[precision][1]
        supported = ctranslate2.get_supported_compute_types("cpu")
        if compute_type not in supported:
            return f"this CPU's CTranslate2 build offers no {compute_type} compute type (it has {', '.join(sorted(supported))})"
        return None

    def load(self, model: ModelSpec, precision: str, options: CTranslate2Options):
        if model.kind == "encoder":
            return self._load_encoder(model, precision, options)
        if model.kind == "decoder":
            reason = self.why_not_precision(precision)
            if reason:
                raise UsageError(f"ctranslate2 cannot run {precision}: {reason}")
            return load_ctranslate2_decoder(model, precision, *_PRECISIONS[precision], options)
        raise UsageError(f"the ctranslate2 engine does not run {model.kind} models yet: use an encoder model")

    def _load_encoder(self, model: ModelSpec, precision: str, options: CTranslate2Options) -> Session:
        import ctranslate2

        reason = self.why_not_precision(precision)
        if reason:
            raise UsageError(f"ctranslate2 cannot run {precision}: {reason}")
        quantization, compute_type = _PRECISIONS[precision]
        folder, details = ctranslate2_model(model, quantization)
        encoder = load_reading_config(lambda: ctranslate2.Encoder(
            str(folder), device="cpu", compute_type=compute_type, inter_threads=options.inter_threads,
            intra_threads=options.threads))
        details.update(compute_type=encoder.compute_type, **session_details(encoder.compute_type))
        details["executed_precision_source"] = "the loaded Encoder's compute_type"
        if precision == "int8":
            details["quantization"] = ct2_quantization(folder, encoder.compute_type)
        details.update(threads_used=options.threads, inter_threads_used=encoder.num_encoders,
                       threads_source="requested (CTranslate2 does not report intra_threads back); inter_threads "
                                      "read back as the Encoder's num_encoders")
        return CTranslate2EncoderSession(encoder, ctranslate2, ct2_executed_precision(encoder.compute_type), details)
