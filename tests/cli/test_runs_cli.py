"""`enginebench runs` (filters, what each run measured) and `enginebench rm` (runs with their results and
samples gone; an unknown run deletes nothing)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from helpers.sample_run import sample_run

from enginebench.cli import main
from enginebench.cli.results import cpu_short, since_time
from enginebench.errors import UsageError
from enginebench.store.database import ResultStore

NOW = datetime.now(timezone.utc)


def _db(tmp_path) -> str:
    """Three runs: minilm on torch/onnxruntime/... two days ago, an llamacpp-only one an hour ago, and the
    first again a week ago."""
    db = str(tmp_path / "runs.db")
    with ResultStore(db) as store:
        for run_id, ago, keep in (("old", timedelta(days=7), None), ("mixed", timedelta(days=2), None),
                                  ("llm", timedelta(hours=1), "llamacpp")):
            run = sample_run(run_id, (NOW - ago).isoformat(timespec="seconds"))
            run.results = [r for r in run.results if keep is None or r.engine == keep]
            store.add_run(run)
            for i, r in enumerate(run.results):
                store.add_result(run.run_id, r, cell=i)
    return db


def _listed(capsys, *args) -> list[str]:
    assert main(["runs", *args]) == 0
    out = capsys.readouterr().out
    return [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ") and "| run |" not in line]


def test_runs_lists_what_each_run_measured(tmp_path, capsys):
    db = _db(tmp_path)
    assert main(["runs", "--db", db]) == 0
    out = capsys.readouterr().out  # captured: not a terminal, so Markdown
    assert "| run | model | engines | cells | machine | busy | repeat |" in out
    mixed = next(line for line in out.splitlines() if line.startswith("| mixed "))
    assert "| minilm, tiny |" in mixed and "torch, onnxruntime, openvino, tinygrad, llamacpp" in mixed
    assert "| 4 ok, 1 failed, 1 skipped |" in mixed and "| Xeon Platinum 8480C, 8 cores |" in mixed
    assert "| ×2 |" in mixed
    assert _listed(capsys, "--db", db) == ["llm", "mixed", "old"]  # newest first


def test_runs_filters_by_model_engine_and_since(tmp_path, capsys):
    db = _db(tmp_path)
    assert _listed(capsys, "--db", db, "--engine", "torch") == ["mixed", "old"]
    assert _listed(capsys, "--db", db, "--engine", "llamacpp,nothing") == ["llm", "mixed", "old"]
    assert _listed(capsys, "--db", db, "--model", "minilm") == ["mixed", "old"]
    assert _listed(capsys, "--db", db, "--since", "3d") == ["llm", "mixed"]
    assert _listed(capsys, "--db", db, "--since", "2h", "--engine", "llamacpp") == ["llm"]
    day = (NOW - timedelta(days=3)).date().isoformat()
    assert _listed(capsys, "--db", db, "--since", day, "--model", "MiniLM") == ["mixed"]
    assert main(["runs", "--db", db, "--engine", "openvino", "--since", "30m"]) == 0
    assert "no runs matching the filters" in capsys.readouterr().out


def test_since_reads_dates_and_durations_and_names_the_fix():
    now = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
    assert since_time("2h", now) == now - timedelta(hours=2)
    assert since_time("3d", now) == now - timedelta(days=3) and since_time("1w", now) == now - timedelta(weeks=1)
    assert since_time("2026-11-20T08:00+00:00") == datetime(2026, 11, 20, 8, tzinfo=timezone.utc)
    assert since_time("2026-11-20").tzinfo is not None
    for bad in ("yesterday", "2x", "-2h"):
        with pytest.raises(UsageError, match="--since 2026-11-25 or --since 2h"):
            since_time(bad, now)


def test_cpu_short_names():
    assert cpu_short("Intel(R) Xeon(R) Platinum 8480C") == "Xeon Platinum 8480C"
    assert cpu_short("AMD EPYC 7763 64-Core Processor") == "EPYC 7763"
    assert cpu_short("Intel(R) Core(TM) i7-1185G7 @ 3.00GHz") == "Core i7-1185G7"
    assert cpu_short(None) == "?"


def test_rm_deletes_runs_results_and_samples(tmp_path, capsys):
    db = _db(tmp_path)
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        ids = [r for (r,) in conn.execute("SELECT id FROM results WHERE run_id = 'mixed'")]
    assert main(["rm", "mixed", "old", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "deleted run mixed: 6 results, " in out and "deleted run old: 6 results, " in out
    with ResultStore(db) as store:
        for run_id in ("mixed", "old"):
            with pytest.raises(UsageError, match="enginebench runs"):
                store.load_run(run_id)
        assert [r.workload for r in store.load_run("llm").results] == ["pp128", "tg16"]  # the other run is whole
    with sqlite3.connect(db) as conn:
        marks = ",".join("?" * len(ids))
        assert conn.execute(f"SELECT COUNT(*) FROM samples WHERE result_id IN ({marks})", ids).fetchone()[0] == 0
        left = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        assert 0 < left < before


def test_rm_of_an_unknown_run_deletes_nothing_and_exits_2(tmp_path, capsys):
    db = _db(tmp_path)
    assert main(["rm", "mixed", "nope", "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run 'nope'" in err and "nothing deleted" in err
    with ResultStore(db) as store:
        assert len(store.load_run("mixed").results) == 6
        with pytest.raises(UsageError, match="no run 'nope'"):
            store.delete_run("nope")
    assert main(["rm", "x", "--db", str(tmp_path / "absent.db")]) == 2
    assert "no database at" in capsys.readouterr().err and not (tmp_path / "absent.db").exists()
