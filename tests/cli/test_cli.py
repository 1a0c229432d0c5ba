"""The command line as a user meets it: real processes, real exit codes, real database."""

import json
import shutil
import sqlite3

import pytest

from helpers.cli import FAST, enginebench, enginebench_here
from helpers.fake_engines import CLI_PLUGINS, FAKE_TORCH

FAKES = f"{CLI_PLUGINS},{FAKE_TORCH}"  # runs of fake engines check them against a fake torch, not the real one


def result_count(db) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(scope="module")
def populated_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "bench.db"
    p = enginebench("run", "--engine", "fake-wrong", "--workload", "titles", "--scenario", "latency",
                    "--batch-size", "1", *FAST, "--db", str(db), plugins=FAKES)
    assert p.returncode == 0, p.stderr
    assert result_count(db) == 1
    return db


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, minilm):
    root = tmp_path_factory.mktemp("models")
    no_tok = root / "no-tokenizer"
    shutil.copytree(minilm.path, no_tok)
    (no_tok / "tokenizer.json").unlink()
    truncated = root / "truncated"
    shutil.copytree(minilm.path, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1 << 20])
    garbage = root / "garbage-config"
    shutil.copytree(minilm.path, garbage)
    (garbage / "config.json").write_text("{not json")
    return {"no-tokenizer": no_tok, "truncated": truncated, "garbage-config": garbage, "missing": root / "nope"}


def _bad_inputs(tmp_path, broken):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 50)
    return {
        "unknown engine": (["--engine", "warpdrive"], "unknown engine 'warpdrive'"),
        "unknown model": (["--model", "gpt-17"], "unknown model 'gpt-17'"),
        "missing model folder": (["--model", str(broken["missing"])], "does not exist"),
        "model without tokenizer": (["--model", str(broken["no-tokenizer"])], "no tokenizer.json"),
        "truncated weights": (["--model", str(broken["truncated"])], "corrupt weights file"),
        "corrupt config": (["--model", str(broken["garbage-config"])], "corrupt config.json"),
        "empty corpus": (["--corpus", str(empty)], "holds no text"),
        "unreadable corpus": (["--corpus", str(binary)], "cannot read corpus"),
        "missing corpus": (["--corpus", str(tmp_path / "none.jsonl")], "does not exist"),
        "negative duration": (["--duration", "-1"], "--duration"),
        "text duration": (["--duration", "soon"], "--duration"),
        "zero batch": (["--batch-size", "0"], "--batch-size 0 must be at least 1"),
        "text batch": (["--batch-size", "1,big"], "--batch-size 'big'"),
        "bad option": (["-o", "fake-wrong.turbo=1"], "no option 'turbo'"),
        "unknown flag": (["--frobnicate"], "unrecognized arguments"),
    }


def test_each_bad_input_is_one_line_exit_2_and_keeps_the_database(tmp_path, populated_db, broken_models):
    # each through `main` in this process (a child's start-up is ~2 s a case), the first also as a real child
    # process: its exit code and stderr are what `main` gives
    for i, (name, (args, fragment)) in enumerate(_bad_inputs(tmp_path, broken_models).items()):
        run = enginebench if i == 0 else enginebench_here
        p = run("run", "--engine", "fake-wrong", *args, "--db", str(populated_db))
        assert p.returncode == 2, (name, p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, (name, p.stderr)
        assert "Traceback" not in p.stderr and fragment in lines[0], (name, lines[0])
        assert lines[0].startswith("enginebench: error: ")
    assert result_count(populated_db) == 1


def test_unwritable_database_is_exit_2(tmp_path, populated_db):
    for db in (tmp_path / "no-such-dir" / "x.db", tmp_path):  # a missing folder, a directory
        p = enginebench_here("run", "--engine", "fake-wrong", *FAST, "--db", str(db))
        assert p.returncode == 2 and "--db" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


@pytest.mark.slow
def test_end_to_end_run_json_schema_and_storage(tmp_path):
    db = tmp_path / "e2e.db"
    p = enginebench("run", "--engine", "torch,onnxruntime", "--batch-size", "1,2", "--workers", "2",
                    "--workload", "titles", *FAST, "--db", str(db), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["run_id"] and out["machine"]["logical_cores"] >= 1
    assert "torch" in out["machine"]["libraries"] and "onnxruntime" in out["machine"]["libraries"]
    results = out["results"]
    assert len(results) == 2 * 2 * 2  # engines x batch sizes x scenarios
    for r in results:
        assert r["status"] == "ok", r
        for key in ("engine", "engine_version", "model", "precision", "scenario", "workload", "batch_size",
                    "seq_len", "workers", "samples", "load_s", "peak_rss_mb"):
            assert key in r
        assert set(r["latency_ms"]) >= {"mean", "median", "p5", "p90", "p99", "stdev", "ci95"}
        assert r["latency_ms"]["ci95"][0] <= r["latency_ms"]["median"] <= r["latency_ms"]["ci95"][1]
        assert r["throughput"]["items_per_s"] > 0 and r["throughput"]["tokens_per_s"] > r["throughput"]["items_per_s"]
        assert r["fidelity"]["metric"] == "min_cosine" and r["fidelity"]["ok"] is True
        assert set(r["verdict"]) == {"ok", "reasons"}
        assert len(r["samples"]) >= 3 * r["workers"] and r["load_s"] > 0 and r["peak_rss_mb"] > 50
    throughput = [r for r in results if r["scenario"] == "throughput"]
    assert all(r["workers"] == 2 and len(r["details"]["worker_load_s"]) == 2 for r in throughput)
    assert result_count(db) == 8
    shown = enginebench("show", "--db", str(db), "--format", "json")
    assert json.loads(shown.stdout)["run_id"] == out["run_id"]
    table = enginebench("show", "--db", str(db))
    assert "median (ms)" in table.stdout and "onnxruntime" in table.stdout
    csv = enginebench("show", "--db", str(db), "--format", "csv")
    assert csv.stdout.count("\n") == 9 and "median_ms" in csv.stdout.splitlines()[0]
    md = enginebench("show", "--db", str(db), "--format", "md")
    assert md.stdout.count("| torch") == 4


@pytest.mark.slow
def test_crash_hang_and_raise_are_recorded_and_the_run_goes_on(tmp_path):
    db = tmp_path / "iso.db"
    p = enginebench("run", "--engine", "fake-crash,fake-hang,fake-raise,fake-wrong", "--workload", "titles",
                    "--scenario", "latency", "--batch-size", "1,2", *FAST, "--timeout", "5", "--db", str(db), "--json",
                    plugins=FAKES)
    assert p.returncode == 0, p.stderr
    by = {(r["engine"], r["batch_size"]): r for r in json.loads(p.stdout)["results"]}
    assert len(by) == 8 and result_count(db) == 8
    crash = by[("fake-crash", 1)]
    assert crash["status"] == "failed" and "SIGSEGV" in crash["error"]
    assert by[("fake-crash", 2)]["status"] == "failed"  # a fresh child runs it and crashes again
    assert by[("fake-hang", 1)]["status"] == "failed" and "timed out after 5 s" in by[("fake-hang", 1)]["error"]
    assert by[("fake-raise", 1)]["status"] == "failed" and "engine exploded" in by[("fake-raise", 1)]["error"]
    # the fast, wrong engine is measured and flagged
    wrong = by[("fake-wrong", 1)]
    assert wrong["status"] == "ok" and wrong["fidelity"]["ok"] is False and wrong["fidelity"]["value"] < 0.5


def test_failed_engine_shows_in_the_table(tmp_path):
    db = tmp_path / "t.db"
    enginebench("run", "--engine", "fake-raise", "--workload", "titles", "--scenario", "latency",
                "--batch-size", "1", *FAST, "--db", str(db), plugins=FAKES)
    p = enginebench("show", "--db", str(db))
    assert "FAILED" in p.stdout and "engine exploded" in p.stdout


@pytest.mark.slow
def test_cpus_pins_the_run(tmp_path):
    p = enginebench("run", "--engine", "fake-wrong", "--workload", "titles", "--scenario", "latency",
                    "--batch-size", "1", *FAST, "--cpus", "0", "--db", str(tmp_path / "c.db"), "--json", plugins=FAKES)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["machine"]["affinity"] == [0]
    assert out["results"][0]["threads"] == 1  # default threads follow the pinned CPU count
    bad = enginebench("run", "--engine", "fake-wrong", "--cpus", "999", "--db", str(tmp_path / "c.db"))
    assert bad.returncode == 2 and "--cpus" in bad.stderr
