"""Who runs a sweep: a process on another machine cannot be checked from here, so the owner writes a heartbeat;
a crashed machine's sweep is taken over on request (--take-over), never one whose owner is seen alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone

import pytest
from helpers.fake_engines import FAULT_PLUGINS, env

from enginebench.store.database import ResultStore
from enginebench.sweep.runner import STALE_S, Heartbeat
from enginebench.sweep.spec import load_sweep

pytestmark = pytest.mark.waits  # heartbeats against a staleness window


@pytest.fixture(autouse=True)
def _fault_engine(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)


def _sweep(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""\
        engine = "fault"
        workload = "titles"
        scenario = "latency"
        batch_size = [1, 2]
        duration = "0.2s"
        warmup = "0.05s"
        min_samples = 3
        repeat = 1

        [options.fault]
        call_ms = [1]
        """))
    return path, load_sweep(str(path), retries=None, max_memory=None)


def _held_by_another_machine(db, sweep, silent_s: float) -> dict:
    beat = (datetime.now(timezone.utc) - timedelta(seconds=silent_s)).isoformat(timespec="seconds")
    owner = {"host": "node-that-crashed", "pid": 4242, "started": "1", "since": beat, "beat": beat}
    with ResultStore(db) as store:
        assert store.claim_sweep(sweep.sweep_id, sweep.file, sweep.spec, owner, lambda holder: True) is None
    return owner


def _sweep_cli(path, db, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enginebench", "sweep", str(path), "--db", str(db), *extra],
                          capture_output=True, text=True, env=env(), timeout=600)


def _owner(db, sweep_id) -> dict | None:
    with ResultStore(db) as store:
        return store._sweep_owner(sweep_id)


def test_a_sweep_held_by_a_silent_machine_is_refused_until_taken_over(tmp_path):
    path, sweep = _sweep(tmp_path)
    db = tmp_path / "r.db"
    _held_by_another_machine(db, sweep, silent_s=STALE_S + 600)
    refused = _sweep_cli(path, db)
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line and "node-that-crashed" in line and "silent for 12 min" in line and "--take-over" in line
    taken = _sweep_cli(path, db, "--take-over")
    assert taken.returncode == 0, taken.stderr
    with ResultStore(db) as store:
        assert store.sweep_cell_counts(sweep.sweep_id) == {"ok": 2}
    assert _owner(db, sweep.sweep_id) is None  # released at the end


def test_a_machine_with_a_fresh_heartbeat_keeps_its_sweep_even_against_take_over(tmp_path):
    path, sweep = _sweep(tmp_path)
    db = tmp_path / "r.db"
    owner = _held_by_another_machine(db, sweep, silent_s=5)
    refused = _sweep_cli(path, db, "--take-over")
    assert refused.returncode == 2 and "is already running (process 4242 on node-that-crashed" in refused.stderr
    assert _owner(db, sweep.sweep_id) == owner


def test_the_owner_beats_until_stopped_and_stops_beating_once_taken_over(tmp_path):
    _, sweep = _sweep(tmp_path)
    db = tmp_path / "r.db"
    old = _held_by_another_machine(db, sweep, silent_s=3600)
    me = {**old, "host": "this-one", "pid": 1}
    with ResultStore(db) as store:  # taken over: the crashed owner's record is replaced
        assert store.claim_sweep(sweep.sweep_id, sweep.file, sweep.spec, me, lambda holder: False) is None
    beat = Heartbeat(str(db), sweep.sweep_id, me, every=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while _owner(db, sweep.sweep_id)["beat"] == me["beat"] and time.monotonic() < deadline:
            time.sleep(0.05)
        fresh = _owner(db, sweep.sweep_id)
        assert fresh["beat"] > me["beat"] and fresh["pid"] == 1
    finally:
        beat.stop()
    with ResultStore(db) as store:
        assert not store.beat_sweep(sweep.sweep_id, old, "2099-01-01T00:00:00+00:00")  # no longer the owner
        assert store._sweep_owner(sweep.sweep_id)["pid"] == 1
