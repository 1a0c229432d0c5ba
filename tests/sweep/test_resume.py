"""A sweep survives its orchestrator: `kill -9` or Ctrl-C mid-sweep, then the same command, and every cell is
stored once with all its repetitions; repetitions stored before the stop are kept as they were. Two sweeps
write one database at once and both keep every result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from helpers.fake_engines import env
from helpers.processes import marked_processes, wait_for_results

from enginebench.store.database import ResultStore

pytestmark = pytest.mark.slow



def _file(tmp_path, name: str, batches: int, call_ms=(1,)) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""\
        engine = "fault"
        workload = "titles"
        scenario = "latency"
        batch_size = {list(range(1, batches + 1))}
        duration = "0.3s"
        warmup = "0.05s"
        min_samples = 3
        repeat = 2

        [options.fault]
        call_ms = {list(call_ms)}
        """))
    return path


def _start(file: Path, db: Path, mark: str = "", *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "enginebench", "sweep", str(file), "--db", str(db), *extra],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(ENGINEBENCH_TEST_MARK=mark),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal


def _cells(db: Path) -> dict[str, object]:
    with ResultStore(db) as store:
        runs = [r for r, in store.conn.execute("SELECT run_id FROM runs")]
        keys = [k for k, in store.conn.execute("SELECT cell_key FROM results")]
        assert len(keys) == len(set(keys)), "a cell stored twice"
        return {k: r for run in runs for k, r in store.keyed_results(run).items()}


def test_kill_9_mid_sweep_then_the_same_command_finishes_without_losing_or_repeating(tmp_path):
    file, db, mark = _file(tmp_path, "k.toml", batches=6, call_ms=(1, 2)), tmp_path / "k.db", uuid.uuid4().hex
    proc = _start(file, db, mark)
    wait_for_results(proc, db, 8, "WHERE json_array_length(result, '$.repetitions') = 2", what="sweep")  # in the second repetition
    os.kill(proc.pid, signal.SIGKILL)  # the orchestrator only: its children must not outlive it
    proc.wait(timeout=10)
    time.sleep(1)
    assert marked_processes(mark) == [], "a child process outlived the killed orchestrator"
    before = _cells(db)
    assert 0 < len(before) <= 12
    kept = {k: [(rep["index"], rep["worker_samples"]) for rep in r.repetitions] for k, r in before.items()}

    done = _start(file, db)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err.decode()
    after = _cells(db)
    assert len(after) == 12 and all(r.status == "ok" for r in after.values())
    assert all(sorted(rep["index"] for rep in r.repetitions) == [0, 1] for r in after.values())
    for key, reps in kept.items():  # what was stored before the kill is still there, unchanged
        now = {rep["index"]: rep["worker_samples"] for rep in after[key].repetitions}
        assert all(now[index] == samples for index, samples in reps)
    left = 24 - sum(len(r) for r in kept.values())
    assert f"{left} measurements stored now" in err.decode()


@pytest.mark.waits  # stops within 5 s of Ctrl-C: at normal priority, beside the niced pass
def test_ctrl_c_stops_the_sweep_at_once_and_prints_the_command_that_resumes_it(tmp_path):
    file, db, mark = _file(tmp_path, "c.toml", batches=8), tmp_path / "c.db", uuid.uuid4().hex
    proc = _start(file, db, mark)
    wait_for_results(proc, db, 2, what="sweep")
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 5
    assert proc.returncode == 130, err.decode()
    assert f"Resume with: enginebench sweep {file} --db {db}" in err.decode()
    time.sleep(0.5)
    assert marked_processes(mark) == []
    again = _start(file, db)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()
    cells = _cells(db)
    assert len(cells) == 8 and all(len(r.repetitions) == 2 for r in cells.values())


def test_two_sweeps_write_one_database_at_once_and_both_keep_every_result(tmp_path):
    db = tmp_path / "shared.db"
    a = _start(_file(tmp_path, "a.toml", batches=8), db)
    b = _start(_file(tmp_path, "b.toml", batches=8, call_ms=(2,)), db)
    for proc in (a, b):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    cells = _cells(db)
    assert len(cells) == 16 and all(r.status == "ok" and len(r.repetitions) == 2 for r in cells.values())


def test_the_same_sweep_started_twice_at_once_is_refused_while_the_first_runs(tmp_path):
    file, db = _file(tmp_path, "t.toml", batches=8), tmp_path / "t.db"
    first = _start(file, db)
    try:
        wait_for_results(first, db, 1, what="sweep")
        second = _start(file, db)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and "is already running (process" in err.decode()
    finally:
        first.kill()
        first.wait()


def test_a_file_whose_corpus_changed_is_a_new_sweep_that_says_so_and_the_old_results_stay(tmp_path):
    """The same command after the corpus's text changed measures anew as another sweep (the cells' identities
    are in its id), says which sweep it is not and why, and leaves the earlier one as stored; run again, it
    resumes the new one silently."""
    corpus, db = tmp_path / "docs.txt", tmp_path / "c.db"
    corpus.write_text("The first document, long enough to be kept.\nAnd a second one, long enough too.\n")
    file = tmp_path / "c.toml"
    file.write_text(_file(tmp_path, "c.toml", batches=1).read_text().replace(
        'workload = "titles"', f'workload = "corpus"\ncorpus = "{corpus}"'))

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "enginebench", "sweep", str(file), "--db", str(db)],
                              capture_output=True, text=True, env=env(), timeout=300)

    first = sweep()
    assert first.returncode == 0, first.stderr[-2000:]
    assert "swept before" not in first.stderr
    before = _cells(db)
    assert len(before) == 1 and all(r.status == "ok" for r in before.values())
    corpus.write_text("Another text altogether, long enough to be kept.\nAnd its second line, long enough.\n")
    second = sweep()
    assert second.returncode == 0, second.stderr[-2000:]
    old_id = next(iter(before)).split("/")[0]
    note = next(line for line in second.stderr.splitlines() if "swept before" in line)
    assert f"as sweep {old_id}" in note and "then corpus" in note and "results stay in the store" in note
    after = _cells(db)
    assert len(after) == 2 and {k: r.repetitions for k, r in after.items() if k in before} == {
        k: r.repetitions for k, r in before.items()}  # the earlier sweep's cell as it was
    new_id = next(k for k in after if k not in before).split("/")[0]
    assert new_id != old_id and f"this is sweep {new_id}" in note
    third = sweep()  # the new sweep again: complete, nothing measured, nothing said of the old one
    assert third.returncode == 0 and "swept before" not in third.stderr and "0 measurements stored now" in (
        third.stdout + third.stderr)
