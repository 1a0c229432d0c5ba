"""Reading and validating a local BERT-family folder: config.json, *.safetensors, tokenizer.json.

Everything is checked up front so that a missing or corrupt file becomes a one-line error in the parent
process, before any engine starts.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from enginebench.errors import UsageError
from enginebench.models.artifacts import file_digest
from enginebench.models.spec import ModelSpec

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_header(path: Path) -> dict:
    """Parse a safetensors header (no tensor data is read). Raises UsageError when the file is corrupt."""
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise ValueError("file is shorter than its 8-byte header length")
            (n,) = struct.unpack("<Q", raw_len)
            size = path.stat().st_size
            if n > size - 8:
                raise ValueError(f"header length {n} exceeds the file size {size}")
            header = json.loads(f.read(n))
        data_len = size - 8 - n
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            if end > data_len:
                raise ValueError(f"tensor {name!r} ends past the end of the file (truncated?)")
        return header
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"corrupt weights file {path}: {e}; re-copy the model folder") from None


def _param_count(header: dict) -> int:
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in info["shape"]:
            count *= d
        total += count
    return total


def load_encoder_folder(path: Path, name: str | None = None) -> ModelSpec:
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"model folder {path} does not exist: give --model a folder with config.json, "
                         "*.safetensors and tokenizer.json")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UsageError(f"{path} has no config.json: give --model a Hugging Face model folder")
    try:
        config = json.loads(config_file.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise UsageError(f"corrupt config.json in {path}: {e}; re-copy the model folder") from None
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        hint = " (pickle .bin weights are not loaded: save them as safetensors)" if any(path.glob("*.bin")) else ""
        raise UsageError(f"{path} has no *.safetensors weights{hint}")
    tokenizer_file = path / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UsageError(f"{path} has no tokenizer.json: save the fast tokenizer with the model")
    try:
        from tokenizers import Tokenizer

        Tokenizer.from_file(str(tokenizer_file))
    except Exception as e:  # tokenizers raises its own exception types
        raise UsageError(f"corrupt tokenizer.json in {path}: {str(e).splitlines()[0]}") from None

    params = sum(_param_count(safetensors_header(w)) for w in weights)
    if params == 0:
        raise UsageError(f"the weights in {path} hold no tensors: re-copy the model folder")
    digest = hashlib.sha256()
    for f in [config_file, tokenizer_file, *weights]:
        digest.update(f.name.encode() + file_digest(f).encode())
    model_type = str(config.get("model_type", "unknown"))
    if config.get("is_decoder") or "CausalLM" in " ".join(config.get("architectures") or []):
        raise UsageError(f"{path} holds a decoder ({model_type}); sentence-encoder benchmarks need an encoder")
    return ModelSpec(
        name=name or path.name,
        kind="encoder",
        path=str(path.resolve()),
        format="safetensors",
        architecture=model_type,
        params=params,
        size_bytes=sum(w.stat().st_size for w in weights),
        content_hash=digest.hexdigest()[:24],
        hidden_size=int(config.get("hidden_size", 0)),
        max_positions=int(config.get("max_position_embeddings", 512)),
    )
