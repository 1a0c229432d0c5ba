"""recommend --confirm N: the pick, the runner-up and the baselines measured again in N fresh interleaved
processes each, and the answer from that round only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers.cli import enginebench, enginebench_here
from helpers.fake_engines import TUNE_PLUGINS

from enginebench.errors import UsageError
from enginebench.search.confirm import check_processes
from enginebench.store.database import ResultStore


@pytest.mark.parametrize("text, words", [("1", "needs at least 2"), ("three", "not a whole number")])
def test_too_few_processes_is_a_one_line_error_before_anything(text, words, tmp_path):
    with pytest.raises(UsageError, match=words):
        check_processes(text)
    done = enginebench_here("recommend", "--confirm", text, "--db", tmp_path / "none.db")
    assert done.returncode == 2 and words in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_recommend_measures_its_pick_again_by_default_and_measures_nothing_when_told_not_to(tmp_path):
    """Engines of known speed (syn int8 4 ms, syn fp32 6 ms, torch 8 ms): stored results offering a choice are
    measured again, 3 processes a configuration, before the answer; --no-confirm reads the stored results only and
    says the figure is the luckiest of them; --confirm and --no-confirm together are refused before anything."""
    db = str(tmp_path / "d.db")
    done = enginebench("run", "--engine", "torch,syn", "--precision", "fp32,int8", "--workload", "titles",
                       "--batch-size", "1", "--scenario", "latency", "--duration", "0.2", "--min-samples", "5",
                       "--warmup", "0.05", "--repeat", "1", "--db", db, plugins=TUNE_PLUGINS)
    assert done.returncode == 0, done.stderr[-2000:]
    with ResultStore(db) as store:
        stored_run = store.run_ids()[0][0]

    # --accept-warn: on a busy host a 0.2 s cell can warn, and the test is about what is measured, not verdicts
    told = enginebench("recommend", "--objective", "latency", "--accept-warn", "--no-confirm", "--json",
                       "--db", db, plugins=TUNE_PLUGINS)
    assert told.returncode == 0, told.stderr[-2000:]
    answer = json.loads(told.stdout)
    assert answer["confirmed"] is False and answer["runner_up"] and answer["run_id"] == stored_run
    with ResultStore(db) as store:
        assert len(store.run_ids()) == 1  # nothing measured

    default = enginebench("recommend", "--objective", "latency", "--accept-warn", "--db", db,
                          plugins=TUNE_PLUGINS)
    assert default.returncode == 0, default.stderr[-2000:]
    assert "confirmation round: " in default.stdout and "3 fresh processes" in default.stdout
    with ResultStore(db) as store:
        ids = [row[0] for row in store.run_ids()]
        assert len(ids) == 2
        round_run = store.load_run(next(i for i in ids if i != stored_run))
    assert round_run.config["repeat"] == 3 and all(len(r.repetitions) == 3 for r in round_run.results)
    assert ("syn", "int8") in {(r.engine, r.precision) for r in round_run.results}
    assert "syn · int8" in default.stdout.split("confirmation round: ")[1]

    both = enginebench_here("recommend", "--confirm", "3", "--no-confirm", "--db", db, plugins=TUNE_PLUGINS)
    assert both.returncode == 2 and "contradict" in both.stderr and len(both.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.engine
def test_the_confirmation_round_measures_the_leaders_again_and_answers_from_that_round(tmp_path):
    db = str(tmp_path / "c.db")
    first = [sys.executable, "-m", "enginebench", "run", "--engine", "torch,onnxruntime", "--workload", "titles",
             "--batch-size", "1", "--scenario", "latency", "--duration", "0.5s", "--min-samples", "10",
             "--warmup", "0.2s", "--repeat", "1", "--db", db]
    subprocess.run(first, check=True, capture_output=True, text=True, timeout=900)
    done = subprocess.run([sys.executable, "-m", "enginebench", "recommend", "--objective", "latency",
                           "--accept-warn", "--confirm", "2", "--json", "--db", db],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    with ResultStore(db) as store:
        runs = [row[0] for row in store.run_ids()]
        assert len(runs) == 2
        round_run = store.load_run(answer["run_id"])
    assert answer["run_id"] in runs and answer["confirmed"]["run_id"] == answer["run_id"]
    assert answer["stored"]["run_id"] != answer["run_id"]
    assert answer["confirmed"]["confirmed"] is True and answer["stored"]["confirmed"] is False
    # the pick and torch fp32 (the runner-up and the default path, or the pick itself): each in 2 processes
    measured = {(r.engine, r.precision) for r in round_run.results}
    assert measured == {("torch", "fp32"), ("onnxruntime", "fp32")}
    assert all(r.status == "ok" and len(r.repetitions) == 2 for r in round_run.results)
    assert round_run.config["repeat"] == 2
    best = answer["confirmed"]["best"]
    assert (best["engine"], best["precision"]) in measured
    assert answer["same_pick"] == (answer["stored"]["best"]["engine"] == best["engine"])
    # the figures shown are the round's: the pick's median is one of the round's results'
    assert best["latency_ms"]["median"] in {r.latency_ms["median"] for r in round_run.results}


@pytest.mark.slow
@pytest.mark.engine
def test_a_decoder_pick_is_measured_again_on_the_same_generation_and_judged_on_its_round(tmp_path):
    """--confirm over decoder results: the round generates the same prompt and output lengths on the same model
    folder, in 2 fresh processes per configuration, and the pick's decode tokens/s come from that round."""
    from helpers.tiny_llama import tiny_llama_spec

    tiny = tiny_llama_spec()
    db = str(tmp_path / "d.db")
    first = [sys.executable, "-m", "enginebench", "run", "--model", tiny.path, "--engine", "torch", "--precision",
             "fp32,bf16", "--prompt-len", "16", "--gen-len", "8", "--duration", "0.3s", "--warmup", "0.05s",
             "--repeat", "1", "--db", db]
    subprocess.run(first, check=True, capture_output=True, text=True, timeout=900)
    done = subprocess.run([sys.executable, "-m", "enginebench", "recommend", "--workload", "tg8", "--min-fidelity",
                           "0.5", "--accept-warn", "--confirm", "2", "--json", "--db", db],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    with ResultStore(db) as store:
        stored = store.load_run(answer["stored"]["run_id"])
        round_run = store.load_run(answer["run_id"])
    assert answer["run_id"] != stored.run_id
    # the same work: the model folder, the generation test and the engine's configurations of the stored run
    assert {r.model for r in round_run.results} == {r.model for r in stored.results}
    assert {r.workload for r in round_run.results} == {"tg8"}
    assert {(r.engine, r.precision) for r in round_run.results} == {("torch", "fp32"), ("torch", "bf16")}
    assert all(r.status == "ok" and len(r.repetitions) == 2 for r in round_run.results)
    best = answer["confirmed"]["best"]
    assert best["workload"] == "tg8" and best["decode_tokens_per_s"]["median"] in {
        r.decode_tokens_per_s["median"] for r in round_run.results}
