"""Cached conversions of a model (ONNX exports, quantized files), keyed by content and converter version.

A conversion is written to a temporary folder and renamed into place, so a crash mid-conversion never
leaves a half-written artifact that a later run would trust.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
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


def finished_artifact(kind: str, key: str) -> Path | None:
    """The folder of a finished artifact, or None when it is missing or still being built (nothing is built)."""
    final = cache_root() / kind / key
    return final if (final / ".complete").exists() else None


def cached_artifact(kind: str, key: str, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (folder, was_cached). `build(folder)` fills an empty folder when the artifact is missing.

    Safe under concurrent runs: the first process to need an artifact builds it under an exclusive lock on
    the key while the others wait, then find it complete; a finished artifact is never removed or rebuilt."""
    final = cache_root() / kind / key
    if finished_artifact(kind, key):
        return final, True
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when the process dies
        if finished_artifact(kind, key):  # another process built it while this one waited
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


def convert_in_subprocess(module: str, *args: str, what: str) -> None:
    """Run `python -m module args...` (a converter's own process, so the process that uses the artifact never
    holds the converter's libraries or copies of the weights); RuntimeError with its last stderr line on failure."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{what} failed: {last}")


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's every byte, computed once per (file, size, mtime): a fine-tune of the same size as
    its base differs only inside, so no part may be skipped, and the digest is remembered in the cache
    folder so that a multi-GB model is read once, not on every run."""
    st = os.stat(path)
    memo = cache_root() / "digests" / artifact_key(os.path.realpath(path), str(st.st_dev), str(st.st_ino),
                                                    str(st.st_size), str(st.st_mtime_ns))
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digest-", dir=memo.parent)
        with os.fdopen(fd, "w") as f:
            f.write(digest)
        os.replace(tmp, memo)  # whole or absent: a reader never sees half a digest
    except OSError:
        pass  # a read-only cache only costs the next run the hashing
    return digest
