"""`enginebench run --resume RUN_ID` finishes a run stopped by Ctrl-C or `kill -9` of its orchestrator: into the
same run id, every cell stored once with all its repetitions, the repetitions stored before the stop kept as
they were, only the missing ones measured. Ctrl-C prints that exact command. A run that cannot be resumed (an
unknown id, another machine's, options that no longer hold or plan other cells) is refused before measuring."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers.fake_engines import FAULT_PLUGINS, env
from helpers.processes import marked_processes, wait_for_results

import enginebench as eb
from enginebench.cli import main
from enginebench.store.database import ResultStore

BATCHES, REPEAT = 6, 2
RUN = ["run", "--engine", "fault", "--workload", "titles", "--scenario", "latency",
       "--batch-size", ",".join(map(str, range(1, BATCHES + 1))), "--duration", "0.3s", "--warmup", "0.05s",
       "--min-samples", "3", "--repeat", str(REPEAT), "-o", "fault.call_ms=2"]


def _start(args: list[str], mark: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enginebench", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(ENGINEBENCH_TEST_MARK=mark),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal


def _stored(db: Path) -> tuple[list[str], dict[int, dict[int, list]]]:
    """(run ids, {cell: {repetition: worker samples}}); fails if a cell is stored twice."""
    with ResultStore(db) as store:
        runs = [r for r, in store.conn.execute("SELECT run_id FROM runs")]
        cells = [c for c, in store.conn.execute("SELECT cell FROM results")]
        assert len(cells) == len(set(cells)), f"a cell stored twice: {sorted(cells)}"
        results = store.cell_results(runs[0]) if runs else {}
    return runs, {cell: {rep["index"]: rep["worker_samples"] for rep in r.repetitions} for cell, r in results.items()}


def _resume_and_check(db: Path, run_id: str, before: dict[int, dict[int, list]]) -> str:
    """Resume the run; every cell ends stored once with all its repetitions and what was stored is unchanged."""
    done = _start(["run", "--resume", run_id, "--db", str(db)])
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()
    left = BATCHES * REPEAT - sum(len(reps) for reps in before.values())
    assert f"resuming run {run_id}: {left} measurements left" in err.decode()
    runs, after = _stored(db)
    assert runs == [run_id]  # the same run, no second one
    assert sorted(after) == list(range(BATCHES))
    assert all(sorted(reps) == list(range(REPEAT)) for reps in after.values())
    for cell, reps in before.items():  # the repetitions stored before the stop, as they were
        assert {r: after[cell][r] for r in reps} == reps
    run = eb.load(run_id, db=str(db))
    assert [r.batch_size for r in run.results] == list(range(1, BATCHES + 1))
    assert all(r.status == "ok" and len(r.process_samples()) == REPEAT for r in run.results)
    return err.decode()


@pytest.mark.slow
@pytest.mark.waits  # stops within 5 s of the signal: at normal priority, beside the niced pass
def test_ctrl_c_prints_the_resume_command_and_resume_finishes_the_same_run(tmp_path):
    db, mark = tmp_path / "c.db", uuid.uuid4().hex
    proc = _start([*RUN, "--db", str(db)], mark)
    wait_for_results(proc, db, 2)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130, err.decode()
    said = re.search(r"interrupted; (\d+) results? (?:is|are) stored in (\S+) as run (\S+)\. Resume with: "
                     r"enginebench run --resume (\S+) --db (\S+)$", err.decode().strip())
    assert said, err.decode()
    n, where, run_id, resume_id, resume_db = said.groups()
    assert where == resume_db == str(db) and run_id == resume_id
    time.sleep(0.5)
    assert marked_processes(mark) == [], "a child process outlived the interrupted run"
    runs, before = _stored(db)
    assert runs == [run_id] and len(before) == int(n) >= 2
    _resume_and_check(db, run_id, before)

    complete = _stored(db)
    again = _start(["run", "--resume", run_id, "--db", str(db)])  # complete: says so, measures nothing
    _, err = again.communicate(timeout=60)
    assert again.returncode == 0 and f"run {run_id} is already complete" in err.decode()
    assert _stored(db) == complete


@pytest.mark.slow
@pytest.mark.waits  # stops within 5 s of the signal: at normal priority, beside the niced pass
def test_kill_9_of_the_orchestrator_then_resume_measures_only_what_is_missing(tmp_path):
    db, mark = tmp_path / "k.db", uuid.uuid4().hex
    proc = _start([*RUN, "--db", str(db)], mark)
    wait_for_results(proc, db, 2, f"WHERE json_array_length(result, '$.repetitions') = {REPEAT}")  # in repetition 2
    os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only: its children must not outlive it
    proc.wait(timeout=10)
    time.sleep(1)
    assert marked_processes(mark) == [], "a child process outlived the killed orchestrator"
    runs, before = _stored(db)
    assert len(runs) == 1 and len(before) == BATCHES  # every cell has its first repetition
    assert 2 <= sum(len(reps) == REPEAT for reps in before.values()) < BATCHES
    _resume_and_check(db, runs[0], before)


# -- refused before measuring: in this process, on runs written by hand -------------------------------------

@pytest.fixture
def fault_engines(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)


def _stored_run(db: Path, argv: list[str], **machine) -> str:
    from enginebench.measure.machine import machine_info

    run = eb.Run(run_id="20261125-000000-abcdef", created_at="2026-11-25T00:00:00+00:00",
                 machine={**machine_info(), **machine}, config={"argv": argv})
    with ResultStore(db) as store:
        store.add_run(run)
    return run.run_id


def _error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("enginebench: error: ")
    return err


def test_an_unknown_run_id_is_refused(tmp_path, capsys):
    db = tmp_path / "u.db"
    _stored_run(db, ["--engine", "fault"])
    assert "no run 'nope'" in _error(capsys, "run", "--resume", "nope", "--db", str(db))
    with pytest.raises(eb.UsageError, match="no database"):
        eb.resume("nope", db=str(tmp_path / "missing.db"))


def test_another_machines_run_is_refused_naming_the_machine(tmp_path, capsys, fault_engines):
    db = tmp_path / "m.db"
    run_id = _stored_run(db, ["--engine", "fault"], hostname="bench-7", cpu="Some Other CPU")
    assert "was measured on bench-7 (Some Other CPU), not on this machine" in _error(
        capsys, "run", "--resume", run_id, "--db", str(db))


def test_options_that_no_longer_hold_or_plan_other_cells_are_refused(tmp_path, capsys, fault_engines):
    db = tmp_path / "o.db"
    gone = _stored_run(db, ["run", "--engine", "gone-engine"])  # older runs kept `run` first
    assert f"run {gone}'s options no longer hold here: unknown engine 'gone-engine'" in _error(
        capsys, "run", "--resume", gone, "--db", str(db))
    with sqlite3.connect(db) as conn:  # the same options once planned other cells (another engine set)
        conn.execute("UPDATE runs SET config = ? WHERE run_id = ?",
                     (json.dumps({"argv": ["--engine", "fault", "--workload", "titles", "--scenario", "latency",
                                           "--batch-size", "1", "--repeat", "1"], "cell_order": [[0, 1]]}), gone))
    assert "no longer plan the same cells here" in _error(capsys, "run", "--resume", gone, "--db", str(db))


def test_resume_takes_only_the_runs_own_options(tmp_path, capsys, fault_engines):
    db = tmp_path / "g.db"
    run_id = _stored_run(db, ["--engine", "fault"])
    assert "drop --engine, --duration" in _error(capsys, "run", "--resume", run_id, "--db", str(db),
                                                 "--engine", "fault", "--duration", "1s")
    assert "--retry-failed is for --resume" in _error(capsys, "run", "--retry-failed", "--db", str(db))


def test_sweep_parts_and_other_commands_runs_point_elsewhere(tmp_path, capsys):
    db = tmp_path / "s.db"
    with ResultStore(db) as store:
        for run_id, config in (("ops-run", {"command": "ops"}),
                               ("part-run", {"argv": ["run"], "sweep": {"id": "s-1", "file": "s.toml"}})):
            store.add_run(eb.Run(run_id=run_id, created_at="2026-11-25T00:00:00+00:00", machine={}, config=config))
    assert "made by `enginebench ops`" in _error(capsys, "run", "--resume", "ops-run", "--db", str(db))
    assert f"resume the sweep with `enginebench sweep s.toml --db {db}`" in _error(
        capsys, "run", "--resume", "part-run", "--db", str(db))


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_resume_from_python_keeps_failures_unless_asked_to_retry_them(tmp_path, fault_engines, monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_TEST_FLAKY_DIR", str(tmp_path))  # the first process to load it crashes
    db = str(tmp_path / "f.db")
    run = eb.run("minilm", engines="fault", workloads="titles", scenarios="latency", batch_size=[1, 2],
                 duration="0.2s", warmup="0.05s", min_samples=3, repeat=1, options={"fault": {"behaviour": "flaky"}},
                 db=db)
    assert [r.status for r in run.results] == ["failed", "ok"]  # the crash cost the first cell only
    complete = eb.resume(run.run_id, db=db)  # a failure is an outcome: nothing is left to measure
    assert [r.status for r in complete.results] == ["failed", "ok"]
    retried = eb.resume(run.run_id, db=db, retry_failed=True)
    assert retried.run_id == run.run_id and [r.status for r in retried.results] == ["ok", "ok"]
    assert [a["kind"] for a in retried.results[0].details["attempts"]] == ["signal"]  # the failed attempt kept
    assert retried.results[1].repetitions == run.results[1].repetitions  # the finished cell untouched
    assert len(eb.load(run.run_id, db=db).results) == 2


def test_a_run_stored_before_the_corpus_digest_resumes_and_one_of_another_corpus_does_not(tmp_path, fault_engines):
    db = str(tmp_path / "d.db")
    run = eb.run("minilm", engines="fault", workloads="titles", scenarios="latency", batch_size=[1],
                 duration="0.2s", warmup="0.05s", min_samples=3, repeat=1, db=db)
    assert run.config["workloads"]["titles"]["digest"]  # the corpus digest: part of a cell's identity

    def stored_digest(value):
        spec = {k: v for k, v in run.config["workloads"]["titles"].items() if k != "digest"}
        config = {**run.config, "workloads": {"titles": spec if value is None else {**spec, "digest": value}}}
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(config), run.run_id))

    stored_digest(None)  # as an older enginebench stored it
    assert eb.resume(run.run_id, db=db).run_id == run.run_id
    stored_digest("0" * 24)  # the titles' text changed since
    with pytest.raises(eb.UsageError, match="no longer plan the same cells"):
        eb.resume(run.run_id, db=db)


def test_a_run_whose_cells_are_other_work_now_is_not_resumed_and_the_error_names_the_difference(tmp_path,
                                                                                                fault_engines):
    """Resume matches each cell on its identity (store/identity.py), not on its name: the model's content or
    an engine option's value changed since the run was stored is refused, whether or not the cell was stored."""
    db = str(tmp_path / "d.db")
    run = eb.run("minilm", engines="fault", workloads="titles", scenarios="latency", batch_size=[1, 2],
                 duration="0.2s", warmup="0.05s", min_samples=3, repeat=1, db=db, option=["fault.call_ms=2"])
    assert eb.resume(run.run_id, db=db).run_id == run.run_id  # unchanged: complete, nothing to do

    def edit(sql: str, *args) -> None:
        with sqlite3.connect(db) as conn:
            conn.execute(sql, args)
            conn.execute("DELETE FROM derived")  # figures cached from the rows as they were

    model = run.config["model"]
    edit("UPDATE runs SET config = ? WHERE run_id = ?",
         json.dumps({**run.config, "model": {**model, "content_hash": "0b7e52c9" + "0" * 16}}), run.run_id)
    with pytest.raises(eb.UsageError, match=r"no longer plan the same cells.*then model content 0b7e52c9, now "
                                            rf"model content {model['content_hash'][:8]}"):
        eb.resume(run.run_id, db=db)
    edit("DELETE FROM results WHERE run_id = ?", run.run_id)  # no cell stored: the run's record still says
    with pytest.raises(eb.UsageError, match="then model content 0b7e52c9"):
        eb.resume(run.run_id, db=db)

    again = eb.run("minilm", engines="fault", workloads="titles", scenarios="latency", batch_size=[1, 2],
                   duration="0.2s", warmup="0.05s", min_samples=3, repeat=1, db=db, option=["fault.call_ms=2"])
    with sqlite3.connect(db) as conn:
        row_id, text = conn.execute("SELECT id, result FROM results WHERE run_id = ? AND batch_size = 2",
                                    (again.run_id,)).fetchone()
    stored = json.loads(text)
    stored["engine_options"] = {**stored["engine_options"], "call_ms": 3.0}  # measured with another value
    edit("UPDATE results SET result = ? WHERE id = ?", json.dumps(stored), row_id)
    with pytest.raises(eb.UsageError, match=r"fault fp32 latency titles b2 is other work now \(then option call_ms 3"):
        eb.resume(again.run_id, db=db)
