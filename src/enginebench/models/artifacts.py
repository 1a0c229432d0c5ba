"""Cached conversions of a model (ONNX exports, quantized files), keyed by content and converter version.

A conversion is written to a temporary folder and renamed into place, so a crash mid-conversion never
leaves a half-written artifact that a later run would trust.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def cache_root() -> Path:
    root = os.environ.get("ENGINEBENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "enginebench"
    )
    return Path(root)


def artifact_key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def cached_artifact(kind: str, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (folder, was_cached). `build(folder)` fills an empty folder when the artifact is missing.

    Safe under concurrent runs: the first process to need an artifact builds it under an exclusive lock on
    the key while the others wait, then find it complete; a finished artifact is never removed or rebuilt."""
    final = cache_root() / kind / key
    if (final / ".complete").exists():
        return final, True
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if (final / ".complete").exists():  # another process built it while this one waited
            return final, True
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
        try:
            build(tmp)
            (tmp / ".complete").touch()
            if final.exists():  # an incomplete folder left by an older version: nobody can be using it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final, False


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes; files over 2 GiB are sampled (size, head, tail) to keep this fast."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= 2 << 30:
            while block := f.read(chunk):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(16 << 20))
            f.seek(-(16 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()
