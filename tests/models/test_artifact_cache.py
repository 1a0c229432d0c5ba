"""The cache of converted models under concurrent runs: one process builds an artifact while the others wait
for it, and a finished artifact is never removed under a reader."""

import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path

import pytest

from enginebench.models.artifacts import cached_artifact


def _build_slowly(out: Path) -> None:
    with open(out.parent / "builds.log", "a") as log:  # every build leaves a line
        log.write("built\n")
    (out / "part1").write_text("half")
    time.sleep(0.5)  # a reader that saw the folder now would find it half-written
    (out / "part2").write_text("whole")


def _use(cache: str, results) -> None:
    import os

    os.environ["ENGINEBENCH_CACHE"] = cache
    folder, cached = cached_artifact("demo", "k1", _build_slowly)
    results.put((cached, sorted(p.name for p in folder.iterdir())))


def test_concurrent_builders_build_once_and_read_whole_artifacts(tmp_path):
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_use, args=(str(tmp_path), results)) for _ in range(3)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert (tmp_path / "demo" / "builds.log").read_text().count("built") == 1
    assert sorted(cached for cached, _ in outcomes) == [False, True, True]
    assert all(files == [".complete", "part1", "part2"] for _, files in outcomes)


def test_a_failed_build_leaves_nothing_to_trust(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path))

    def broken(out: Path) -> None:
        (out / "part1").write_text("half")
        raise RuntimeError("converter crashed")

    try:
        cached_artifact("demo", "k2", broken)
    except RuntimeError:
        pass
    assert not (tmp_path / "demo" / "k2").exists()
    folder, cached = cached_artifact("demo", "k2", _build_slowly)
    assert not cached and (folder / "part2").read_text() == "whole"


@pytest.mark.slow  # hashes two files of 2 GiB
def test_a_same_size_fine_tune_over_2_gib_gets_its_own_digest(tmp_path, monkeypatch):
    from enginebench.models.artifacts import file_digest

    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))
    size = (2 << 30) + (64 << 20)  # past the size where the head and tail alone were once hashed
    # sparse files, on tmpfs where there is one: a disk file system fills the page cache with zeros on the first
    # read of a hole (10 s a GiB here), tmpfs reads holes as zeros (1 s a GiB)
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path) as folder:
        base, tuned = Path(folder) / "base.gguf", Path(folder) / "tuned.gguf"
        for path in (base, tuned):
            with open(path, "wb") as f:  # sparse: nothing is written for the zeros
                f.truncate(size)
        with open(tuned, "r+b") as f:  # one weight changed, far from both ends
            f.seek(size // 2)
            f.write(b"\x01")
        assert file_digest(base) != file_digest(tuned)


def test_a_digest_is_computed_once_per_file_size_and_mtime(tmp_path, monkeypatch):
    import os

    from enginebench.models.artifacts import file_digest

    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.bin"
    model.write_bytes(b"a" * 1000)
    first = file_digest(model)
    st = model.stat()
    model.write_bytes(b"b" * 1000)  # same size; the mtime put back: the remembered digest is used, unread
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert file_digest(model) == first
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewrite moves the mtime
    assert file_digest(model) != first
