"""Against a real embeddings server: Infinity (infinity-emb, in its own virtual environment: `make servers`)
serving the shipped MiniLM on loopback. The latency and concurrency scenarios through `enginebench run
--endpoint --api embeddings`, fidelity as min cosine against the torch reference, figures from the records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers.queueing import assert_bracketed
from helpers.servers import INFINITY, INFINITY_ENV, free_port, infinity_command, serving

from enginebench.formats.tables.endpoint import difference_ci
from enginebench.models import resolve_model
from enginebench.scenarios.requests import CLIENT_BOUND

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
        # the client's own ceiling with as many clients, against the minimal local server: far above a real
        # server's rate, so no row is flagged as limited by the client
        ceiling = f["client_ceiling"]
        assert ceiling["clients"] == (r["settings"] or {}).get("clients", 1)
        assert ceiling["requests_per_s"] > f["requests_per_s"]["value"] and ceiling["share"] < CLIENT_BOUND
        assert not any("client's own ceiling" in x for x in r["verdict"]["reasons"])
    clients = {r["settings"]["clients"]: r for r in results if r["scenario"] == "concurrency" and r["batch_size"] == 4}
    assert {x["client"] for x in clients[2]["repetitions"][0]["requests"]} == {0, 1}


def test_the_server_tax_beside_the_same_model_in_process(server, tmp_path):
    """--engine beside --endpoint: the same titles one at a time through the server and in-process on torch (the
    framework Infinity serves MiniLM with), in one run; the tax is the server's median end to end minus torch's
    median call, each over the processes, with Welch's interval over the two (formats/tables/endpoint.py)."""
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", server, "--api", "embeddings",
                           "--model", "minilm", "--workload", "titles", "--engine", "torch", "--scenario", "latency",
                           "--duration", "1s", "--warmup", "0.3s", "--min-samples", "20", "--repeat", "2", "--json",
                           "--db", str(tmp_path / "eb.db")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    d = json.loads(done.stdout)
    rows = {r["engine"]: r for r in d["results"]}
    assert set(rows) == {"endpoint", "torch"} and all(r["status"] == "ok" for r in rows.values())
    assert rows["torch"]["precision"] == "fp32" and rows["torch"]["fidelity"]["ok"]
    (tax,) = d["server_tax"]
    alone = rows["torch"]["latency_ms"]
    served = rows["endpoint"]["figures"]["requests"]["e2e_ms"]["median"]
    assert tax["engine"] == "torch" and tax["workload"] == tax["request"] == "titles" and tax["batch_size"] == 1
    assert tax["figure"] == "per request" and tax["in_process"] == "call"
    assert tax["in_process_ms"] == {"value": alone["median"], "ci95": alone["ci95"]}
    assert tax["server_ms"] == {"value": served["median"], "ci95": served["ci95"]}
    assert tax["tax_ms"]["value"] == pytest.approx(served["median"] - alone["median"])
    lo, hi = tax["tax_ms"]["ci95"]
    assert [lo, hi] == pytest.approx(difference_ci(served, alone)) and lo < tax["tax_ms"]["value"] < hi
    print(f"torch {alone['median']:.2f} ms, Infinity {served['median']:.2f} ms: tax {tax['tax_ms']['value']:+.2f} ms")
    assert any(n.startswith("server tax, titles, per request: torch fp32 in-process ") for n in d["notes"]), d["notes"]


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
    # measured after the clock with the client threads LoadGen's arrivals used: 6 req/s is far below it
    assert r["figures"]["requests"]["client_ceiling"]["share"] < CLIENT_BOUND
    records = r["repetitions"][0]["requests"]
    assert len(records) >= 12 and all(x["failure"] is None for x in records)
    assert all(x["issued_ns"] <= x["sent_ns"] < x["done_ns"] for x in records)
    loadgen = r["details"]["loadgen"]
    assert loadgen["settings"]["server_target_qps"] == 6 and loadgen["result"]["query_count"] == len(records)
    # arrivals are LoadGen's, not a closed loop's: the rate achieved is near the one offered (a wide margin)
    assert 6 / 2 < r["serving"]["achieved_qps"] < 6 * 2
    assert r["fidelity"]["ok"]


def test_find_max_qps_against_the_embeddings_server(server, tmp_path):
    """--find-max-qps against the server: LoadGen trials at rising then bisected rates, each with its own
    arrivals, until a VALID and an INVALID rate are within --search-within (20% here: two trials fewer than the
    default 5%); the cell keeps the highest VALID trial's requests. Without --qps the search starts at 0.7 of
    what 64 closed-loop clients got answered in the warm-up: Infinity batches, so that is well above one
    client's rate (2.5 times here), where a search started from one client spent its longest trials."""
    common = [sys.executable, "-m", "enginebench", "run", "--endpoint", server, "--api", "embeddings", "--model",
              "minilm", "--workload", "titles", "--repeat", "1", "--warmup", "1s", "--db", str(tmp_path / "eb.db")]
    alone = subprocess.run(common + ["--scenario", "latency", "--duration", "1s", "--min-samples", "20", "--json"],
                           capture_output=True, text=True, timeout=900)
    assert alone.returncode == 0, alone.stderr[-3000:]
    one_ms = json.loads(alone.stdout)["results"][0]["figures"]["requests"]["e2e_ms"]["p50"]["value"]
    # a loose target: the answer is then near what the server can serve at all, where 459-request trials are
    # short (at a tight one it lands at a few requests/s, and each trial takes minutes)
    slo = max(1000.0, 20 * one_ms)
    done = subprocess.run(common + ["--scenario", "server", "--find-max-qps",
                                    "--search-within", "20%", "--slo-p99", f"{slo:.0f}",
                                    "--duration", "1s", "--min-samples", "459", "--json"],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    (r,) = json.loads(done.stdout)["results"]
    search = r["serving"]["find_max_qps"]
    print(f"one request {one_ms:.1f} ms, p99 target {slo:.0f} ms: bracket {search['bracket']}, "
          f"{len(search['trials'])} trials")
    lo, _ = assert_bracketed(search, 0.20)
    assert search["tolerance"] == 0.20  # --search-within reached the child's search
    capacity, one = search["capacity_estimate_qps"], search["capacity_one_client_qps"]
    print(search["capacity_from"])
    assert search["capacity_from"].startswith("64 clients back to back") and capacity > 1.2 * one
    assert search["trials"][0]["qps"] == pytest.approx(0.7 * capacity)
    # the cell is the highest VALID trial: its requests, LoadGen's VALID, its rate
    assert r["serving"]["offered_qps"] == lo and r["details"]["loadgen"]["result"]["validity"] == "VALID"
    assert r["details"]["loadgen"]["settings"]["server_target_qps"] == lo
    assert all(x["failure"] is None for x in r["repetitions"][0]["requests"])
    assert not any(x.startswith("--find-max-qps") for x in r["verdict"]["reasons"])
    # a finite rate the server reached: two cores cannot serve 16 times one client's back-to-back rate
    assert 0 < lo < 16 * 1e3 / one_ms
    shown = subprocess.run([sys.executable, "-m", "enginebench", "show", "--db", str(tmp_path / "eb.db")],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert shown.returncode == 0 and "max " in shown.stdout and "…" not in shown.stdout, shown.stdout


def test_offline_against_the_embeddings_server_issues_every_request_at_once(server, tmp_path):
    """--scenario offline: LoadGen's Offline issues every request at once; the client threads keep many in
    flight, so the server answers more per second than one client back to back (it batches or overlaps)."""
    done = subprocess.run([sys.executable, "-m", "enginebench", "run", "--endpoint", server, "--api", "embeddings",
                           "--model", "minilm", "--workload", "titles", "--scenario", "latency,offline",
                           "--duration", "2s", "--warmup", "0.5s", "--min-samples", "50", "--repeat", "1", "--json",
                           "--db", str(tmp_path / "eb.db")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    alone, offline = json.loads(done.stdout)["results"]
    assert offline["scenario"] == "offline" and offline["status"] == "ok", offline.get("error")
    assert offline["serving"]["all_at_once"] and offline["details"]["loadgen"]["settings"]["scenario"] == "offline"
    records = offline["repetitions"][0]["requests"]
    assert all(x["failure"] is None for x in records)
    # every request issued at the start (LoadGen may hand them over in several calls), sent on many threads
    issued = [x["issued_ns"] for x in records]
    window = max(x["done_ns"] for x in records) - min(issued)
    print(f"issued over {(max(issued) - min(issued)) / 1e6:.1f} ms of a {window / 1e6:.0f} ms run")
    assert max(issued) - min(issued) < 0.05 * window and len({x["client"] for x in records}) > 1
    # LoadGen's Offline is one query of every sample; every sample was answered
    assert offline["details"]["loadgen"]["result"]["query_count"] == 1 and len(records) >= 50
    one = alone["figures"]["requests"]["requests_per_s"]["value"]
    rate = offline["figures"]["requests"]["requests_per_s"]["value"]
    print(f"one client {one:.1f} req/s, everything at once {rate:.1f} req/s")
    assert rate > 1.2 * one
    assert offline["fidelity"]["ok"]
