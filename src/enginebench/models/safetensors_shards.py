"""Write and read Hugging Face weights one tensor at a time, so models larger than memory stay possible.

Shards follow the Hugging Face layout: one `model.safetensors`, or `model-0000i-of-0000n.safetensors` plus
`model.safetensors.index.json` when the weights exceed one shard.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from enginebench.models.encoder_folder import safetensors_header

MAX_SHARD_BYTES = 2 << 30
INDEX_FILE = "model.safetensors.index.json"


def write_shards(out_dir: Path, plan: list[tuple[str, int]], produce: Callable[[str], np.ndarray],
                 max_shard_bytes: int = MAX_SHARD_BYTES) -> None:
    """`plan` lists (tensor name, byte size) in file order; `produce(name)` makes the tensor when its shard is written."""
    from safetensors.numpy import save_file

    shards: list[list[str]] = [[]]
    size = 0
    for name, nbytes in plan:
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    weight_map = {}
    for n, names in enumerate(shards, 1):
        file = "model.safetensors" if len(shards) == 1 else f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: np.ascontiguousarray(produce(name)) for name in names}
        save_file(tensors, str(Path(out_dir) / file), metadata={"format": "pt"})
        del tensors
        weight_map.update(dict.fromkeys(names, file))
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(n for _, n in plan)}, "weight_map": weight_map}
        (Path(out_dir) / INDEX_FILE).write_text(json.dumps(index, indent=1))


def weight_files(folder: Path) -> dict[str, Path]:
    """tensor name -> file holding it."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        return {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    from safetensors import safe_open

    found = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            found.update(dict.fromkeys(f.keys(), file))
    return found


def iter_tensors(folder: Path, names: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) one at a time, in `names` order (default: file order); bfloat16 comes back as float32."""
    files = weight_files(folder)
    for name in names if names is not None else list(files):
        yield name, read_tensor(files, name)


def read_tensor(files: dict[str, Path], name: str) -> np.ndarray:
    """One tensor from the file `files` (weight_files) says holds it; bfloat16 comes back as float32."""
    from safetensors import safe_open

    with safe_open(str(files[name]), framework="numpy") as f:
        try:
            array = f.get_tensor(name)
        except TypeError:  # numpy has no bfloat16 ...
            array = _read_bfloat16(files[name], name)
    if array.dtype.name == "bfloat16":  # ... unless ml_dtypes (imported by jax) registered one
        array = array.astype(np.float32)
    return array


def _read_bfloat16(file: Path, name: str) -> np.ndarray:
    """A bfloat16 tensor widened to float32: bfloat16 is the top half of a float32's bits."""
    header = safetensors_header(file)
    info = header[name]
    if info["dtype"] != "BF16":
        raise TypeError(f"tensor {name} in {file} has dtype {info['dtype']}, which numpy cannot read")
    start, end = info["data_offsets"]
    with open(file, "rb") as f:
        (header_len,) = np.frombuffer(f.read(8), dtype="<u8")
        f.seek(8 + int(header_len) + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
