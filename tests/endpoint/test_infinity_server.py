"""Against a real embeddings server: Infinity (infinity-emb, in its own virtual environment: `make servers`)
serving the shipped MiniLM on loopback. The latency and concurrency scenarios through `enginebench run
--endpoint --api embeddings`, fidelity as min cosine against the torch reference, figures from the records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from enginebench.models import resolve_model
from helpers.servers import INFINITY, INFINITY_ENV, free_port, infinity_command, serving

pytestmark = [pytest.mark.slow, pytest.mark.engine]


@pytest.fixture(scope="module")
def server(tmp_path_factory, require):
    if not INFINITY.exists():
        require(f"no Infinity server at {INFINITY}: `make servers` installs it in .venv-servers/infinity")
    port = free_port()
    log = tmp_path_factory.mktemp("infinity") / "server.log"
    with serving(infinity_command(resolve_model("minilm").path, port), port, log=log, env=INFINITY_ENV) as url:
        yield url


def test_latency_and_concurrency_against_the_embeddings_server(server, tmp_path):
    db = tmp_path / "eb.db"
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", server, "--api", "embeddings",
                           "--model", "minilm", "--workload", "titles", "--scenario", "latency,concurrency",
                           "--batch-size", "1,4", "--concurrency", "1,2", "--duration", "1s", "--warmup", "0.3s",
                           "--min-samples", "5", "--repeat", "1", "--slo-p99", "10000", "--json", "--db", str(db)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout)["results"]
    assert [(r["scenario"], r["batch_size"]) for r in results] == [
        ("latency", 1), ("latency", 4), ("concurrency", 1), ("concurrency", 1), ("concurrency", 4),
        ("concurrency", 4)]
    for r in results:
        assert r["status"] == "ok", r.get("error")
        # the server's embeddings of the same texts against the in-process torch reference: min cosine
        assert r["fidelity"]["metric"] == "min_cosine" and r["fidelity"]["ok"] and r["fidelity"]["value"] > 0.99
        f = r["figures"]["requests"]
        records = [x for x in r["repetitions"][0]["requests"] if x["phase"] == "measured"]
        assert sum(f["failures"].values()) == 0 and f["ok"] == f["requests"] == len(records)
        e2e = [(x["done_ns"] - x["sent_ns"]) / 1e6 for x in records]
        assert f["e2e_ms"]["p99"]["value"] == pytest.approx(float(np.percentile(e2e, 99)), rel=1e-9)
        assert "ttft_ms" not in f and "output_tokens_per_s" not in f  # embeddings: no tokens come back
        assert f["goodput_per_s"]["value"] == pytest.approx(f["requests_per_s"]["value"])  # 10 s: all meet it
        # input tokens counted locally: a title is ~13 tokens, special tokens included
        assert all(8 * r["batch_size"] <= x["input_tokens"] <= 20 * r["batch_size"] for x in records)
    clients = {r["settings"]["clients"]: r for r in results if r["scenario"] == "concurrency" and r["batch_size"] == 4}
    assert {x["client"] for x in clients[2]["repetitions"][0]["requests"]} == {0, 1}


def test_loadgen_poisson_arrivals_against_the_embeddings_server(server, tmp_path):
    """--scenario server --qps: LoadGen's Poisson arrivals sent as requests (an open loop), judged by LoadGen
    against --slo-p99; every request's record kept, LoadGen's own report beside them."""
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", server, "--api", "embeddings",
                           "--model", "minilm", "--workload", "titles", "--scenario", "server", "--qps", "6",
                           "--slo-p99", "5000", "--duration", "2s", "--warmup", "0.3s", "--min-samples", "12",
                           "--repeat", "1", "--json", "--db", str(tmp_path / "eb.db")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (r,) = json.loads(done.stdout)["results"]
    assert r["status"] == "ok" and r["serving"]["kind"] == "endpoint" and r["serving"]["offered_qps"] == 6
    records = r["repetitions"][0]["requests"]
    assert len(records) >= 12 and all(x["failure"] is None for x in records)
    assert all(x["issued_ns"] <= x["sent_ns"] < x["done_ns"] for x in records)
    loadgen = r["details"]["loadgen"]
    assert loadgen["settings"]["server_target_qps"] == 6 and loadgen["result"]["query_count"] == len(records)
    # arrivals are LoadGen's, not a closed loop's: the rate achieved is near the one offered (a wide margin)
    assert 6 / 2 < r["serving"]["achieved_qps"] < 6 * 2
    assert r["fidelity"]["ok"]
