"""Small C helpers of the measuring side (the CPUID mask, the clock probe), compiled once with the system's C
compiler into the artifact cache: one builder at a time, renamed into place when whole (models/artifacts.py)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path


def compiler() -> str | None:
    """The system's C compiler (cc, gcc or clang), or None."""
    return next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def shared_library(source: Path, kind: str, libraries: tuple[str, ...] = ()) -> Path:
    """`source` compiled into `<cache>/<kind>/<key>/<stem>-<key>.so`, keyed by the source's text and the compiler;
    RuntimeError, with the compiler's last line, if there is no compiler or the build fails."""
    from enginebench.models.artifacts import cached_artifact

    cc = compiler()
    if not cc:
        raise RuntimeError(f"no C compiler (cc, gcc or clang) to build {source.name}")
    key = hashlib.sha256(source.read_bytes() + cc.encode()).hexdigest()[:16]
    name = f"{source.stem}-{key}.so"

    def build(folder: Path) -> None:
        proc = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(folder / name), str(source),
                               *(f"-l{lib}" for lib in libraries)], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"building {source.name} failed: {last}")

    folder, _ = cached_artifact(kind, key, build)
    return folder / name


__all__ = ["compiler", "shared_library"]
