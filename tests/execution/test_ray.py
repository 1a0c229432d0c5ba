"""`--ray`: a real Ray cluster of two nodes on this machine (`ray start`, one CPU and its own resource each)
runs a sweep of the fast synthetic engine. Every cell is stored once, both nodes measure, each result carries
its node's machine metadata; a sweep stopped locally is finished on Ray; `--client-nodes 2` shares a
concurrency cell's clients against a real server out over both nodes, started together; a node lost mid-job
costs only its job's unfinished cells, which another node measures."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from helpers.fake_engines import env

pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.waits]  # waits: a local Ray cluster and node-loss timing

RAY = str(Path(sys.executable).with_name("ray"))


def _descendants(pids: list[int]) -> list[int]:
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return found


def _started_by(temp: str) -> list[int]:
    """Processes of this test's cluster: those marked in their environment or naming its folder, and their
    children (Ray's agents overwrite their environment with their title)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if (f"EB_RAY_TEST_MARK={temp}".encode() in (entry / "environ").read_bytes()
                        or temp.encode() in (entry / "cmdline").read_bytes()):
                    found.append(int(entry.name))
            except OSError:
                continue
    return _descendants(found)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self):
        self.temp = tempfile.mkdtemp(prefix="ebray")  # short: Ray's socket paths live under it
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = env(RAY_AUTH_MODE="disabled", EB_RAY_TEST_MARK=self.temp)

    def start_node(self, name: str, head: bool = False) -> None:
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false"] if head else [
            "--address", self.address]
        subprocess.run([RAY, "start", *where, "--num-cpus", "1", "--resources", json.dumps({name: 1}),
                        "--node-ip-address", "127.0.0.1", "--temp-dir", self.temp, "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=60)

    def node_ids(self) -> dict[str, str]:
        """Custom resource name -> Ray node id, of the live nodes."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); print(json.dumps({k: n['NodeID'] "
                "for n in ray.nodes() if n['Alive'] for k in n['Resources'] if k.startswith('node_')}))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, check=True, capture_output=True, text=True,
                             timeout=60).stdout
        return json.loads(out.strip().splitlines()[-1])

    def kill_node(self, node_id: str) -> None:
        """As if its machine went away: its raylet and everything below it (workers, their children) at once."""
        for pid in _started_by(self.temp):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "raylet/raylet" in cmd and f"--node_id={node_id}" in cmd:
                _kill(_descendants([pid]))
                return
        raise AssertionError(f"no raylet for node {node_id}")

    def stop(self) -> None:
        for _ in range(3):  # Ray may start a process while the others are being ended
            _kill(_started_by(self.temp))
            time.sleep(0.5)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        c.start_node("node_a", head=True)
        c.start_node("node_b")
        yield c
    finally:
        c.stop()


def _file(tmp_path: Path, batches: int, duration: str = "0.3s") -> Path:
    path = tmp_path / "ray.toml"
    path.write_text(textwrap.dedent(f"""\
        engine = "fault"
        workload = "titles"
        scenario = "latency"
        batch_size = {list(range(1, batches + 1))}
        threads = [1, 2]
        duration = "{duration}"
        warmup = "0.05s"
        min_samples = 3
        repeat = 2

        [options.fault]
        call_ms = [1, 2]
        """))
    return path


def _sweep(file: Path, db: Path, cluster: Cluster | None, **popen) -> subprocess.Popen:
    ray = ["--ray", cluster.address] if cluster else []
    return subprocess.Popen([sys.executable, "-m", "enginebench", "sweep", str(file), "--db", str(db), *ray],
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cluster.env if cluster else env(), **popen)


def _results(db: Path) -> list[tuple[str, str, dict]]:
    """(cell key, status, result) of every stored row."""
    with sqlite3.connect(db, timeout=30) as conn:
        rows = conn.execute("SELECT cell_key, status, result FROM results").fetchall()
    return [(key, status, json.loads(result)) for key, status, result in rows]


def _wait(proc, db: Path, enough, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                if enough(_results(db)):
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"not reached; sweep: {proc.poll()} {proc.stderr.read().decode() if proc.poll() else ''}")


def _finish(proc) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out.decode() + err.decode()


def _node(result: dict) -> str | None:
    return (result["details"].get("node") or {}).get("ray_node_id")


def _check_complete(db: Path, cells: int) -> list[dict]:
    rows = _results(db)
    keys = [key for key, _, _ in rows]
    assert len(keys) == cells and len(set(keys)) == cells  # every cell stored exactly once
    assert {status for _, status, _ in rows} == {"ok"}
    for _, _, r in rows:
        assert sorted(rep["index"] for rep in r["repetitions"]) == [0, 1]  # each repetition once
    return [r for _, _, r in rows]


def test_sweep_stopped_locally_is_finished_on_two_ray_nodes(cluster, tmp_path):
    file, db = _file(tmp_path, batches=3), tmp_path / "results.db"
    local = _sweep(file, db, None)
    _wait(local, db, lambda rows: len(rows) >= 2)
    os.killpg(local.pid, signal.SIGKILL)
    local.wait()
    before = {key: r for key, _, r in _results(db)}

    log = _finish(_sweep(file, db, cluster))
    results = _check_complete(db, cells=2 * 2 * 3)  # call_ms parts x threads x batch sizes
    nodes = cluster.node_ids()
    assert {_node(r) for r in results if _node(r)} == {nodes["node_a"], nodes["node_b"]}, log
    for r in results:
        node = r["details"].get("node")
        if node is None:  # measured wholly before the stop, on this machine
            continue
        assert node["hostname"] == socket.gethostname() and node["logical_cores"] and node["cpu"]
        on_ray = [rep for rep in r["repetitions"] if rep["measurement"]["details"].get("node")]
        assert {rep["measurement"]["details"]["node"]["ray_node_id"] for rep in on_ray} == {node["ray_node_id"]}
    now = {key: r for key, _, r in _results(db)}
    for key, r in before.items():  # what the local run stored is kept as it was
        kept = {rep["index"]: rep for rep in r["repetitions"]}
        assert {rep["index"]: rep for rep in now[key]["repetitions"] if rep["index"] in kept} == kept
    with sqlite3.connect(db) as conn:
        configs = [json.loads(c) for (c,) in conn.execute("SELECT config FROM runs")]
    assert len(configs) == 2 and all(c["sweep"]["id"] == configs[0]["sweep"]["id"] for c in configs)


def test_client_nodes_share_a_concurrency_cells_clients_out_and_start_them_together(cluster, tmp_path, require):
    """--client-nodes 2 against llama-cpp-python's real OpenAI-compatible server on SmolLM2's GGUF: the cell's
    4 clients run 2 on each node, both halves start at once, and their records make one result naming both."""
    try:
        importlib.import_module("llama_cpp.server.app")  # the `server` extra: fastapi, uvicorn, sse-starlette
    except ImportError as e:
        require(f"llama-cpp-python's server extra does not import ({e}): pip install 'enginebench[endpoint]'")
    from helpers.servers import free_port, llamacpp_command, serving

    from enginebench.models.decoder_folder import smollm2_gguf

    port, db = free_port(), tmp_path / "eb.db"
    with serving(llamacpp_command(str(smollm2_gguf()), port), port, log=tmp_path / "server.log") as url:
        done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", url, "--api", "completions",
                               "--model", "smollm2-135m", "--scenario", "concurrency", "--concurrency", "4",
                               "--prompt-len", "16", "--gen-len", "4", "--duration", "2s", "--warmup", "0.3s",
                               "--min-samples", "3", "--repeat", "1", "--ray", cluster.address, "--client-nodes", "2",
                               "--json", "--db", str(db)], capture_output=True, text=True, timeout=600,
                              env={**cluster.env, "ENGINEBENCH_ENGINES": ""})  # the real torch: the reference
    assert done.returncode == 0, done.stderr[-3000:]
    (r,) = json.loads(done.stdout)["results"]
    assert r["status"] == "ok", r.get("error")
    nodes = cluster.node_ids()
    spread = r["details"]["client_nodes"]
    assert sorted(n["ray_node_id"] for n in spread) == sorted(nodes.values()) and [n["clients"] for n in spread] == [2, 2]
    records = r["repetitions"][0]["requests"]
    assert {x["client"] for x in records} == {0, 1, 2, 3}
    # one clock: each half's first request sent at the same moment (the start line), both inside the window
    first = [min(x["sent_ns"] for x in records if x["client"] in half) for half in ({0, 1}, {2, 3})]
    print(f"halves started {abs(first[0] - first[1]) / 1e6:.1f} ms apart")
    assert abs(first[0] - first[1]) < 0.25e9
    start, stop = r["details"]["window"]
    measured = [x for x in records if x.get("phase") == "measured"]
    assert {x["client"] for x in measured} == {0, 1, 2, 3} and all(start <= x["sent_ns"] <= stop for x in measured)
    assert r["figures"]["requests"]["requests_per_s"]["value"] > 0 and r["fidelity"] is not None
    assert "client load spread over 2 nodes" in json.dumps(r["details"])


def test_a_node_lost_mid_job_costs_only_its_unfinished_cells(cluster, tmp_path):
    nodes = cluster.node_ids()
    file, db = _file(tmp_path, batches=4, duration="0.5s"), tmp_path / "results.db"
    proc = _sweep(file, db, cluster)
    _wait(proc, db, lambda rows: any(_node(r) == nodes["node_b"] for _, _, r in rows))
    cluster.kill_node(nodes["node_b"])
    log = _finish(proc)
    results = _check_complete(db, cells=2 * 2 * 4)
    # the job node_b was running when it died was finished by node_a: one job's repetitions on both nodes
    jobs: dict[tuple, set] = {}
    for r in results:
        key = (json.dumps(r["engine_options"], sort_keys=True), r["threads"])
        jobs.setdefault(key, set()).update(rep["measurement"]["details"]["node"]["ray_node_id"]
                                           for rep in r["repetitions"])
    assert set.union(*jobs.values()) == {nodes["node_a"], nodes["node_b"]}, log
    assert any(len(n) == 2 for n in jobs.values()), jobs
