"""Ctrl-C (SIGINT to the terminal's process group) stops `enginebench run` within a second or two: the cell in
flight is dropped, its child process ended, and every finished cell stays in the database."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
from helpers.processes import count_results, marked_processes

pytestmark = [pytest.mark.slow, pytest.mark.waits]  # a run must stop within 5 s of Ctrl-C


def test_ctrl_c_stops_the_run_and_keeps_finished_cells(tmp_path):
    db = tmp_path / "interrupt.db"
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "enginebench", "run", "--engine", "torch", "--workload", "titles", "--scenario",
           "latency", "--batch-size", "1,2,4,8", "--duration", "2s", "--warmup", "0.1s", "--repeat", "1",
           "--db", str(db)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "ENGINEBENCH_TEST_MARK": mark},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.monotonic() + 240
        # count_results: the file exists a moment before its schema does (it said "no such table" once)
        while time.monotonic() < deadline and proc.poll() is None and count_results(db) < 1:
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err.decode()
    assert stopped_after < 5, f"took {stopped_after:.1f} s to stop"
    assert "interrupted" in err.decode()
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT COUNT(*) FROM results WHERE status = 'ok'").fetchone()[0]
    assert 1 <= stored < 4
    time.sleep(0.5)
    assert marked_processes(mark) == [], "a child process outlived the interrupted run"
