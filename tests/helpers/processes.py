"""What the interruption tests share: find the processes a test started (by a mark in their environment) and
wait until a database holds some results."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

MARK = "ENGINEBENCH_TEST_MARK"


def marked_processes(mark: str) -> list[int]:
    """Pids of live processes whose environment carries ENGINEBENCH_TEST_MARK=mark."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"{MARK}={mark}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def count_results(db: Path, where: str = "") -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute(f"SELECT COUNT(*) FROM results {where}").fetchone()[0]
        except sqlite3.OperationalError:  # the schema is not written yet
            return 0


def wait_for_results(proc, db: Path, results: int, where: str = "", what: str = "run") -> None:
    """Until `db` holds `results` results (matching `where`) while `proc` still runs."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None and count_results(db, where) < results:
        time.sleep(0.1)
    assert proc.poll() is None, f"the {what} ended before it could be stopped: {proc.communicate()[1].decode()}"
