"""Convert a local Hugging Face folder to a CTranslate2 model once, cached by content, converter version and
quantization.

The conversion loads the checkpoint with transformers (and torch), so it runs in its own Python process: the
engine that loads the result never has torch in its memory, and its peak RSS is its own.
"""

from __future__ import annotations

import sys
import time
from importlib import metadata
from pathlib import Path

from enginebench.models.artifacts import artifact_key, cached_artifact, convert_in_subprocess
from enginebench.models.spec import ModelSpec

CONVERT_FORMAT_VERSION = "1"  # bump when the conversion's arguments change


def ctranslate2_model(model: ModelSpec, quantization: str | None) -> tuple[Path, dict]:
    """Folder of the converted model (weights stored as `quantization`, or as in the checkpoint when None)."""
    version = metadata.version("ctranslate2")
    quant = quantization or "none"
    key = artifact_key(model.content_hash, "ctranslate2", version, quant, CONVERT_FORMAT_VERSION)
    started = time.perf_counter()
    folder, cached = cached_artifact("ctranslate2", key, lambda out: convert_in_subprocess(
        "enginebench.models.ctranslate2_convert", model.path, str(out), quant, what="CTranslate2 conversion"))
    return folder, {
        "ct2_cached": cached, "ct2_convert_s": round(time.perf_counter() - started, 3),
        "converter": f"ctranslate2 {version} TransformersConverter (quantization {quant})", "ct2_path": str(folder),
    }


def convert(model_path: str, out: Path, quantization: str) -> None:
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from ctranslate2.converters import TransformersConverter

    with tempfile.TemporaryDirectory() as scratch:
        source = _with_config_defaults(Path(model_path), Path(scratch))
        TransformersConverter(str(source)).convert(str(out), force=True,
                                                   quantization=None if quantization == "none" else quantization)


# config.json keys that transformers 5 no longer writes but ctranslate2's loaders still read, with the value
# transformers assumes when they are absent
_CONFIG_DEFAULTS = {"bert": {"position_embedding_type": "absolute"}}


def _with_config_defaults(folder: Path, scratch: Path) -> Path:
    """The folder itself, or a linked copy in `scratch` whose config.json spells out the missing defaults."""
    import json

    config = json.loads((folder / "config.json").read_text())
    missing = {k: v for k, v in _CONFIG_DEFAULTS.get(config.get("model_type"), {}).items() if k not in config}
    if not missing:
        return folder
    for item in folder.iterdir():
        if item.name != "config.json":
            (scratch / item.name).symlink_to(item.resolve())
    (scratch / "config.json").write_text(json.dumps({**config, **missing}, indent=2))
    return scratch


if __name__ == "__main__":
    convert(sys.argv[1], Path(sys.argv[2]), sys.argv[3])
