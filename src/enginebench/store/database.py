"""The embedded SQLite store. Every result is committed the moment it arrives, with its raw samples.

An ok result built from Measurements is kept as what was measured (store/derive.py `stored_form`: no derived
figures, median_ms and items_per_s left NULL) and derived again when read (`rebuilt`), through the `derived`
cache while the deriving code is unchanged; any other result, and every result stored before schema 5, is kept
and read back as it is."""

from __future__ import annotations

import json
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from enginebench.errors import UsageError
from enginebench.measure.peak import stored_ceilings
from enginebench.scenarios.registry import REGISTRY
from enginebench.store.derive import derivation_digest, is_stored_form, rebuilt, stored_form
from enginebench.store.model import SAMPLE_ARRAYS, SCHEMA_VERSION, Result, Run

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    machine TEXT NOT NULL,      -- JSON
    config TEXT NOT NULL,       -- JSON
    schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    engine TEXT NOT NULL,
    model TEXT NOT NULL,
    precision TEXT NOT NULL,
    scenario TEXT NOT NULL,
    workload TEXT NOT NULL,
    batch_size INTEGER NOT NULL,
    workers INTEGER NOT NULL,
    status TEXT NOT NULL,
    median_ms REAL,
    items_per_s REAL,
    result TEXT NOT NULL,       -- JSON of the Result without its samples
    samples BLOB,               -- schema <= 2: every sample pooled, int64 little-endian ns (now in `samples`)
    cell INTEGER,               -- the cell's index in its run's plan (a result is rewritten per repetition)
    cell_key TEXT               -- a sweep's cell: its key, unique in the store (schema 4; see _INDEXES)
);
CREATE INDEX IF NOT EXISTS results_run ON results(run_id);
CREATE TABLE IF NOT EXISTS samples (  -- every repetition's arrays apart, so every figure can be rebuilt
    result_id INTEGER NOT NULL REFERENCES results(id),
    repetition INTEGER NOT NULL,  -- position in the result's repetitions
    worker INTEGER NOT NULL,      -- worker index for call samples; -1 for per-generation arrays
    kind TEXT NOT NULL,           -- worker_samples (ns per call) | ttft_ns, generation_steps | tpot_ns (a request's)
    data BLOB NOT NULL,           -- int64 little-endian
    PRIMARY KEY (result_id, repetition, worker, kind)
);
CREATE TABLE IF NOT EXISTS derived (  -- a cache, never the truth: a schema-5 result as the code of `digest` derived it
    result_id INTEGER PRIMARY KEY REFERENCES results(id),
    digest TEXT NOT NULL,         -- store/derive.py derivation_digest(); another digest's row is derived again
    result TEXT NOT NULL          -- JSON of the derived Result without its samples
);
CREATE TABLE IF NOT EXISTS machine_speed (  -- `enginebench machine`: the roofline's two ceilings
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    measured_at TEXT NOT NULL,
    hostname TEXT NOT NULL,
    bandwidth_gbs REAL NOT NULL,  -- memory bandwidth, GB/s (1e9 bytes)
    gemm_gflops REAL NOT NULL,    -- float32 matmul, GFLOP/s
    details TEXT NOT NULL         -- JSON: method, sizes, threads, every run
);
CREATE TABLE IF NOT EXISTS sweeps (  -- `enginebench sweep FILE`: one row per sweep file and machine
    sweep_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    file TEXT NOT NULL,           -- the path it was started with
    spec TEXT NOT NULL,           -- JSON: the file's parsed content
    owner TEXT                    -- JSON {host, pid, since} of the process running it now; null when none
);
"""
# after the columns they index exist (an older database gains them in _check_version)
_INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS results_cell_key ON results(cell_key) WHERE cell_key IS NOT NULL;
"""
BUSY_TIMEOUT_S = 60.0  # another process writing the database (two runs at once) holds it for milliseconds


@dataclass
class RunOverview:
    """What `enginebench runs` lists of a run, read without its samples."""
    run_id: str
    created_at: str  # ISO 8601, UTC: when the run started
    machine: dict
    config: dict
    models: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # ok / failed / skipped -> cells
    busy_s: float = 0.0  # every process's load and measuring time, summed (the store keeps no end time)


class ResultStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.conn = None
        try:
            if self.path.parent and not self.path.parent.exists():
                raise sqlite3.OperationalError(f"folder {self.path.parent} does not exist")
            self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S)
            self._use_wal()
            self.conn.executescript(_SCHEMA)
            self._check_version()
            self.conn.executescript(_INDEXES)
            self.conn.commit()
        except sqlite3.DatabaseError as e:
            if getattr(self, "conn", None) is not None:
                self.conn.close()  # and with it any lock it took
            raise UsageError(f"cannot use database {self.path}: {e}; pass --db with a writable SQLite file path") from None

    def _use_wal(self) -> None:
        """Write-ahead logging: readers never wait for a writer and writers queue briefly, so two runs or
        sweeps can share one database. Where it cannot be turned on (a read-only file), the default journal
        with the busy timeout still serialises writers."""
        if str(self.path) == ":memory:":
            return
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass

    def _check_version(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            return
        self.conn.commit()
        self.conn.execute("BEGIN IMMEDIATE")  # one process migrates; another waits, then finds it done
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer enginebench (schema {row[0]} > {SCHEMA_VERSION})")
        elif int(row[0]) < SCHEMA_VERSION:  # older results read back unchanged (new fields absent = None)
            columns = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
            if "cell" not in columns:
                self.conn.execute("ALTER TABLE results ADD COLUMN cell INTEGER")
            if "cell_key" not in columns:
                self.conn.execute("ALTER TABLE results ADD COLUMN cell_key TEXT")
            self.conn.execute("UPDATE meta SET value = ? WHERE key='schema_version'", (str(SCHEMA_VERSION),))

    def add_machine_speed(self, speed: dict) -> None:
        self.conn.execute(
            "INSERT INTO machine_speed (measured_at, hostname, bandwidth_gbs, gemm_gflops, details) VALUES (?, ?, ?, ?, ?)",
            (speed["measured_at"], speed["hostname"], speed["bandwidth_gbs"], speed["gemm_gflops"],
             json.dumps(speed.get("details", {}))),
        )
        self.conn.commit()

    def machine_speed(self, hostname: str | None = None) -> dict | None:
        """The newest `enginebench machine` measurement (of this host when given), or None."""
        where, args = ("WHERE hostname = ?", (hostname,)) if hostname else ("", ())
        row = self.conn.execute(
            f"SELECT measured_at, hostname, bandwidth_gbs, gemm_gflops, details FROM machine_speed {where} "
            "ORDER BY id DESC LIMIT 1", args).fetchone()
        if row is None:
            return None
        return {"measured_at": row[0], "hostname": row[1], "bandwidth_gbs": row[2], "gemm_gflops": row[3],
                "details": json.loads(row[4])}

    def ceilings(self):
        """This host's measured roofline ceilings (measure/peak.py Ceilings) from its newest `enginebench machine`
        row here, or None."""
        return stored_ceilings(self.machine_speed(socket.gethostname()), str(self.path))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add_run(self, run: Run) -> None:
        self.conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (run.run_id, run.created_at, json.dumps(run.machine), json.dumps(run.config), run.schema_version),
        )
        self.conn.commit()

    def add_run_once(self, run: Run) -> bool:
        """Store a run unless one with its id is stored (a resumed sweep's part); True if it was new."""
        with self.conn:
            cursor = self.conn.execute(
                "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?)",
                (run.run_id, run.created_at, json.dumps(run.machine), json.dumps(run.config), run.schema_version))
        return cursor.rowcount == 1

    def add_result(self, run_id: str, result: Result, cell: int | None = None, key: str | None = None) -> None:
        """Store a result, committed at once; one with measurements is what build_result derived from them (as
        a launcher gives it), cached as this code's derivation. With `cell`, a result already stored for that cell of the run
        (an earlier repetition's) is replaced, so the store always holds the newest figures. With `key` (a
        sweep's cell), the result stored under that key is replaced: one row per key, whatever the run."""
        raw = stored_form(result)
        derived = None if raw is None else _derived_json(result)  # what build_result derived from `raw`
        values = (result.engine, result.model, result.precision, result.scenario, result.workload,
                  result.batch_size, result.workers, result.status, *_row_figures(result, raw))
        with self.conn:  # one transaction: the row and its samples, or nothing
            self.conn.execute("BEGIN IMMEDIATE")
            if key is not None:
                row = self.conn.execute("SELECT id FROM results WHERE cell_key = ?", (key,)).fetchone()
            else:
                row = None if cell is None else self.conn.execute(
                    "SELECT id FROM results WHERE run_id = ? AND cell = ?", (run_id, cell)).fetchone()
            if row:
                result_id = row[0]
                self.conn.execute(
                    "UPDATE results SET engine=?, model=?, precision=?, scenario=?, workload=?, batch_size=?,"
                    " workers=?, status=?, median_ms=?, items_per_s=?, result=?, samples=?, cell=? WHERE id = ?",
                    (*values, cell, result_id))
                self.conn.execute("DELETE FROM samples WHERE result_id = ?", (result_id,))
                self.conn.execute("DELETE FROM derived WHERE result_id = ?", (result_id,))
            else:
                result_id = self.conn.execute(
                    "INSERT INTO results (engine, model, precision, scenario, workload, batch_size, workers, status,"
                    " median_ms, items_per_s, result, samples, run_id, cell, cell_key)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (*values, run_id, cell, key)).lastrowid
            self.conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", _sample_rows(result_id, result))
            if derived is not None:
                self.conn.execute("INSERT INTO derived VALUES (?, ?, ?)", (result_id, derivation_digest(), derived))

    def keyed_results(self, run_id: str) -> dict[str, Result]:
        """A run's results stored under a cell key (a sweep's), by key, with their samples."""
        rows = self.conn.execute("SELECT id, result, samples, cell_key FROM results WHERE run_id = ? AND "
                                 "cell_key IS NOT NULL", (run_id,)).fetchall()
        return {key: self._result(result_id, result_json, blob) for result_id, result_json, blob, key in rows}

    def cell_results(self, run_id: str) -> dict[int | None, Result]:
        """A run's results by their cell index in its plan, with their samples (what resumes a run). Results
        stored before the index was kept are under None (the last of them)."""
        rows = self.conn.execute("SELECT id, result, samples, cell FROM results WHERE run_id = ? ORDER BY id",
                                 (run_id,)).fetchall()
        return {cell: self._result(result_id, result_json, blob) for result_id, result_json, blob, cell in rows}

    def sweep_cell_counts(self, sweep_id: str) -> dict[str, int]:
        """Stored cells of a sweep by status (its keys start with the sweep's id)."""
        return dict(self.conn.execute(
            "SELECT status, COUNT(*) FROM results WHERE cell_key >= ? AND cell_key < ? GROUP BY status",
            (sweep_id + "/", sweep_id + "0")).fetchall())

    # -- sweeps: one process at a time runs a sweep ------------------------------------------------
    def claim_sweep(self, sweep_id: str, file: str, spec: dict, owner: dict, keeps) -> dict | None:
        """Record the sweep (once) and make `owner` the process running it. If another process holds it and
        `keeps(holder)` says it keeps it (it still runs), nothing changes and that holder is returned; else None."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute("SELECT owner FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
            if row is None:
                self.conn.execute("INSERT INTO sweeps VALUES (?, ?, ?, ?, ?)",
                                  (sweep_id, owner["since"], file, json.dumps(spec), json.dumps(owner)))
                return None
            holder = json.loads(row[0]) if row[0] else None
            if holder and keeps(holder):
                return holder
            self.conn.execute("UPDATE sweeps SET owner = ?, file = ? WHERE sweep_id = ?",
                              (json.dumps(owner), file, sweep_id))
        return None

    def release_sweep(self, sweep_id: str, owner: dict) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if _same_owner(self._sweep_owner(sweep_id), owner):
                self.conn.execute("UPDATE sweeps SET owner = NULL WHERE sweep_id = ?", (sweep_id,))

    def beat_sweep(self, sweep_id: str, owner: dict, beat: str) -> bool:
        """Record that `owner` still runs the sweep (its heartbeat, an ISO time); False if it no longer owns it
        (another process took it over)."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if not _same_owner(self._sweep_owner(sweep_id), owner):
                return False
            self.conn.execute("UPDATE sweeps SET owner = ? WHERE sweep_id = ?",
                              (json.dumps({**owner, "beat": beat}), sweep_id))
        return True

    def earlier_sweep(self, sweep_id: str, spec: dict) -> tuple[str, str] | None:
        """(sweep id, created at) of the newest other sweep of a file with the same content as `spec`, while
        sweep `sweep_id` has not started; None otherwise."""
        if self.conn.execute("SELECT 1 FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone():
            return None
        return self.conn.execute("SELECT sweep_id, created_at FROM sweeps WHERE spec = ? AND sweep_id != ? "
                                 "ORDER BY created_at DESC LIMIT 1", (json.dumps(spec), sweep_id)).fetchone()

    def _sweep_owner(self, sweep_id: str) -> dict | None:
        row = self.conn.execute("SELECT owner FROM sweeps WHERE sweep_id = ?", (sweep_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def run_ids(self) -> list[tuple[str, str, int]]:
        """(run_id, created_at, number of results), newest first."""
        return self.conn.execute(
            "SELECT r.run_id, r.created_at, COUNT(x.id) FROM runs r LEFT JOIN results x ON x.run_id = r.run_id "
            "GROUP BY r.run_id ORDER BY r.created_at DESC, r.rowid DESC"
        ).fetchall()

    def run_overviews(self) -> list[RunOverview]:
        """Every run with its models, engines, cells per status and busy time, newest first."""
        overviews = {}
        for run_id, created, machine, config in self.conn.execute(
                "SELECT run_id, created_at, machine, config FROM runs ORDER BY created_at DESC, rowid DESC"):
            overviews[run_id] = RunOverview(run_id, created, json.loads(machine), json.loads(config))
        for run_id, model, engine, status, result_json in self.conn.execute(
                "SELECT run_id, model, engine, status, result FROM results ORDER BY COALESCE(cell, id), id"):
            o = overviews.get(run_id)
            if o is None:
                continue
            o.models += [model] if model not in o.models else []
            o.engines += [engine] if engine not in o.engines else []
            o.statuses[status] = o.statuses.get(status, 0) + 1
            o.busy_s += _busy_s(json.loads(result_json))
        return list(overviews.values())

    def delete_run(self, run_id: str) -> dict[str, int]:
        """Delete a run with its results and their samples, in one transaction: {"results": n, "samples": n}
        (sample arrays). An unknown run is a UsageError."""
        if self.conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise UsageError(f"no run {run_id!r} in {self.path}: see `enginebench runs --db {self.path}` for the stored runs")
        with self.conn:
            self.conn.execute("DELETE FROM derived WHERE result_id IN (SELECT id FROM results WHERE run_id = ?)",
                              (run_id,))
            samples = self.conn.execute(
                "DELETE FROM samples WHERE result_id IN (SELECT id FROM results WHERE run_id = ?)", (run_id,)).rowcount
            results = self.conn.execute("DELETE FROM results WHERE run_id = ?", (run_id,)).rowcount
            self.conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        return {"results": results, "samples": samples}

    def load_run(self, run_id: str | None = None) -> Run:
        """A stored run with its results (the newest when run_id is None)."""
        if run_id is None:
            row = self.conn.execute("SELECT run_id FROM runs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
            if row is None:
                raise UsageError(f"no runs in {self.path}: run `enginebench run` first")
            run_id = row[0]
        row = self.conn.execute(
            "SELECT run_id, created_at, machine, config, schema_version FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise UsageError(f"no run {run_id!r} in {self.path}: see `enginebench runs` for the stored runs")
        run = Run(row[0], row[1], json.loads(row[2]), json.loads(row[3]), schema_version=row[4])
        for result_id, result_json, blob in self.conn.execute(
            "SELECT id, result, samples FROM results WHERE run_id = ? ORDER BY COALESCE(cell, id), id", (run_id,)
        ).fetchall():
            run.results.append(self._result(result_id, result_json, blob))
        return run

    def _result(self, result_id: int, result_json: str, blob: bytes | None) -> Result:
        d = json.loads(result_json)
        arrays = self._arrays(result_id)
        if not is_stored_form(d):
            return _with_samples(d, arrays, blob)
        for position, rep in enumerate(d["repetitions"]):  # tpot_ns was kept in the JSON before 2026-12-06
            for kind in SAMPLE_ARRAYS:
                if rep.get(kind) is not None:
                    arrays.setdefault(position, {}).setdefault(kind, rep[kind])
        cached = self.conn.execute("SELECT result FROM derived WHERE result_id = ? AND digest = ?",
                                   (result_id, derivation_digest())).fetchone()
        if cached is None and d["scenario"] not in REGISTRY:  # a newer version's scenario: as it derived it
            cached = self.conn.execute("SELECT result FROM derived WHERE result_id = ?", (result_id,)).fetchone()
        if cached is not None:
            return _with_samples(json.loads(cached[0]), arrays, None)
        for position, rep in enumerate(d["repetitions"]):
            rep.update(arrays.get(position, {}))
        result = rebuilt(d)
        self._cache(result_id, result)
        return result

    def _cache(self, result_id: int, result: Result) -> None:
        try:
            with self.conn:
                self.conn.execute("INSERT OR REPLACE INTO derived VALUES (?, ?, ?)",
                                  (result_id, derivation_digest(), _derived_json(result)))
        except sqlite3.OperationalError:  # a read-only database: derived again on the next read
            pass

    def _arrays(self, result_id: int) -> dict[int, dict]:
        """{repetition: {kind: array, "worker_samples": [per worker]}} of one result."""
        out: dict[int, dict] = {}
        for repetition, worker, kind, data in self.conn.execute(
                "SELECT repetition, worker, kind, data FROM samples WHERE result_id = ? "
                "ORDER BY repetition, kind, worker", (result_id,)):
            values = np.frombuffer(data, dtype="<i8").tolist()
            rep = out.setdefault(repetition, {})
            if kind == "worker_samples":
                rep.setdefault(kind, []).append(values)
            else:
                rep[kind] = values
        return out


def _same_owner(holder: dict | None, owner: dict) -> bool:
    """The same process (its heartbeat aside)."""
    return holder is not None and all(holder.get(k) == owner.get(k) for k in ("host", "pid", "started"))


def _with_samples(d: dict, arrays: dict[int, dict], blob: bytes | None) -> Result:
    """A Result from its stored JSON (without samples) and its arrays, or (schema <= 2) its pooled blob."""
    if arrays:  # schema 3: the repetitions' arrays; the pooled samples are their concatenation
        for position, rep in enumerate(d.get("repetitions", [])):
            rep.update(arrays.get(position, {}))
        d["samples"] = [x for rep in d["repetitions"] for w in rep.get("worker_samples", []) for x in w]
    else:
        d["samples"] = np.frombuffer(blob or b"", dtype="<i8").tolist()
    return Result.from_dict(d)


def _derived_json(result: Result) -> str:
    return json.dumps(result.to_dict(with_samples=False))


def _row_figures(result: Result, raw: dict | None) -> tuple:
    """(median_ms, items_per_s, result JSON, pooled samples) of a results row; `raw`: its stored form, if any."""
    if raw is not None:
        reps = [{k: v for k, v in rep.items() if k not in SAMPLE_ARRAYS} for rep in raw["repetitions"]]
        return None, None, json.dumps({**raw, "repetitions": reps}), None
    # samples without repetitions (a result built by hand) keep the pooled blob of schema <= 2
    pooled = None if result.repetitions else np.asarray(result.samples, dtype="<i8").tobytes()
    return ((result.latency_ms or {}).get("median"), (result.throughput or {}).get("items_per_s"),
            json.dumps(result.to_dict(with_samples=False)), pooled)


def _busy_s(result: dict) -> float:
    """A stored result's processes' load plus measuring time, s (results before repetitions: one process)."""
    reps = result.get("repetitions") or []
    if reps:
        return sum((rep.get("load_s") or 0) + (rep.get("wall_s") or 0) for rep in reps)
    return (result.get("load_s") or 0) + ((result.get("details") or {}).get("wall_s") or 0)


def _sample_rows(result_id: int, result: Result):
    for position, rep in enumerate(result.repetitions):
        for kind in SAMPLE_ARRAYS:
            if rep.get(kind) is None:
                continue
            arrays = rep[kind] if kind == "worker_samples" else [rep[kind]]
            for worker, values in enumerate(arrays):
                yield (result_id, position, worker if kind == "worker_samples" else -1, kind,
                       np.asarray(values, dtype="<i8").tobytes())
