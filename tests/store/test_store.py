import json
import sqlite3

import numpy as np
import pytest

from enginebench.errors import UsageError
from enginebench.store.database import ResultStore
from enginebench.store.model import SCHEMA_VERSION, Result, Run


def _result(**kw):
    base = dict(engine="torch", model="minilm", precision="fp32", scenario="latency", workload="corpus",
                batch_size=4, seq_len=128, workers=1, threads=2, samples=[1_000_000, 1_200_000, 900_000],
                latency_ms={"median": 1.0, "ci95": [0.9, 1.2]}, throughput={"items_per_s": 4000.0},
                verdict={"ok": False, "reasons": ["only 3 samples"]}, fidelity={"metric": "min_cosine", "value": 1.0, "ok": True},
                engine_options={"threads": 2}, details={"workload": {"seed": 0}})
    base.update(kw)
    return Result(**base)


def test_round_trip_keeps_samples_and_every_field(tmp_path):
    run = Run("r1", "2026-11-23T12:00:00+00:00", {"cpu": "x"}, {"argv": ["run"]})
    with ResultStore(tmp_path / "a.db") as store:
        store.add_run(run)
        store.add_result("r1", _result())
        store.add_result("r1", _result(status="failed", error="boom", samples=[], latency_ms=None, verdict=None))
    with ResultStore(tmp_path / "a.db") as store:
        loaded = store.load_run()
        assert store.run_ids()[0][0] == "r1" and store.run_ids()[0][2] == 2
    assert loaded.machine == {"cpu": "x"}
    assert loaded.results[0] == _result()
    assert loaded.results[0].samples == [1_000_000, 1_200_000, 900_000]
    assert loaded.results[1].status == "failed" and loaded.results[1].error == "boom"


def test_result_validation():
    with pytest.raises(ValueError, match="negative"):
        _result(samples=[5, -1])
    with pytest.raises(ValueError, match="at least one sample"):
        _result(samples=[])
    with pytest.raises(ValueError, match="needs an error"):
        _result(status="failed")
    with pytest.raises(ValueError, match="batch_size"):
        _result(batch_size=0)


def test_unwritable_or_corrupt_database_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--db"):
        ResultStore(tmp_path / "missing-dir" / "x.db")
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UsageError, match="cannot use database"):
        ResultStore(bad)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    ResultStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="newer"):
        ResultStore(path)


def test_unknown_run_is_a_usage_error(tmp_path):
    with ResultStore(tmp_path / "a.db") as store:
        with pytest.raises(UsageError, match="no runs"):
            store.load_run()
        with pytest.raises(UsageError, match="no run 'x'"):
            store.load_run("x")


def test_a_schema_2_database_opens_and_its_pooled_samples_read_as_one_process(tmp_path):
    import sqlite3

    db = tmp_path / "v2.db"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, created_at TEXT NOT NULL, machine TEXT NOT NULL,
                           config TEXT NOT NULL, schema_version INTEGER NOT NULL);
        CREATE TABLE results (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, engine TEXT NOT NULL,
            model TEXT NOT NULL, precision TEXT NOT NULL, scenario TEXT NOT NULL, workload TEXT NOT NULL,
            batch_size INTEGER NOT NULL, workers INTEGER NOT NULL, status TEXT NOT NULL, median_ms REAL,
            items_per_s REAL, result TEXT NOT NULL, samples BLOB);
    """)
    old = _result()
    conn.execute("INSERT INTO runs VALUES ('old', '2026-11-23T12:00:00+00:00', '{}', '{}', 2)")
    conn.execute("INSERT INTO results (run_id, engine, model, precision, scenario, workload, batch_size, workers,"
                 " status, result, samples) VALUES ('old', 'onnxruntime', 'minilm', 'fp32', 'latency', 'titles', 1,"
                 " 1, 'ok', ?, ?)", (json.dumps(old.to_dict(with_samples=False)),
                                     np.asarray(old.samples, dtype="<i8").tobytes()))
    conn.commit()
    conn.close()
    with ResultStore(db) as store:
        back = store.load_run("old").results[0]
        store.add_result("old", old, cell=1)  # the upgraded table takes new rows
    assert back.samples == old.samples and back.process_samples() == [old.samples]
