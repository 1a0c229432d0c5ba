"""ModelSpec: what to run, independent of any engine."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # a registry name ("minilm") or the folder's name for a user path
    kind: str  # "encoder" or "decoder"
    path: str  # folder holding config.json, weights and tokenizer.json
    format: str  # "safetensors", "gguf", ...
    architecture: str  # config.json's model_type, e.g. "bert"
    params: int  # parameter count, read from the weights' headers
    size_bytes: int  # weights on disk
    content_hash: str  # identifies the exact files: keys every cached conversion
    hidden_size: int
    max_positions: int
    gguf_path: str | None = None  # decoders that came as a GGUF file: the original file (path holds its HF reference)
    until: str | None = None  # ONNX node (or tensor) to cut the model at: `enginebench run --until NODE`

    def to_dict(self) -> dict:
        return asdict(self)
