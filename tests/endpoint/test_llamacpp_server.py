"""Against llama-cpp-python's own OpenAI-compatible server on the SmolLM2 GGUF, started on loopback with a key:
the client's streamed records, the latency and concurrency scenarios through `enginebench run --endpoint`, the
figures recomputed from the stored records, the key never written anywhere, and bad input refused before
measuring."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.servers import API_KEY_ENV, free_port, llamacpp_command, serving, stop

from enginebench.endpoint.client import Connection, Target
from enginebench.endpoint.probe import probe
from enginebench.errors import UsageError
from enginebench.models.decoder_folder import smollm2_gguf
from enginebench.scenarios.requests import CLIENT_BOUND

pytestmark = [pytest.mark.slow, pytest.mark.engine]

KEY = "sk-enginebench-test-7f3a91"  # the server's key: it must never reach stdout, stderr or the database


@pytest.fixture(scope="module")
def server(tmp_path_factory, require):
    try:
        import llama_cpp.server.app  # noqa: F401  (the `server` extra: fastapi, uvicorn, sse-starlette)
    except ImportError as e:
        require(f"llama-cpp-python's server extra does not import ({e}): pip install 'enginebench[endpoint]'")
    port = free_port()
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with serving(llamacpp_command(str(smollm2_gguf()), port, "--api_key", KEY), port, log=log,
                 headers={"Authorization": f"Bearer {KEY}"}) as url:
        yield url


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, KEY)


def _target(url, api="completions", **kw):
    return Target(url, api, "smollm2", API_KEY_ENV, **kw)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_streamed_request_gives_its_record(server, keyed, api):
    conn = Connection(_target(server, api))
    try:
        records = [conn.send("The history of the city begins", max_tokens=6) for _ in range(2)]  # one connection
    finally:
        conn.close()
    for r in records:
        assert r["failure"] is None and r["status"] == 200, r
        assert r["sent_ns"] < r["first_ns"] <= r["chunk_ns"][-1] <= r["done_ns"]
        assert r["chunk_ns"] == sorted(r["chunk_ns"]) and r["chunk_ns"][0] == r["first_ns"]
        assert r["text"] and r["finish_reason"] in ("length", "stop")
        if r["finish_reason"] == "length":
            assert 1 <= len(r["chunk_ns"]) <= 6


def test_failures_are_records_of_their_kind(server, keyed, monkeypatch):
    slow = Connection(_target(server, timeout_s=0.001))
    assert slow.send("Tell me a long story", max_tokens=64)["failure"] == "timeout"
    slow.close()
    monkeypatch.delenv(API_KEY_ENV)  # no key: the server answers 401
    got = Connection(_target(server)).send("Hello", max_tokens=2)
    assert got["failure"] == "http" and got["status"] == 401
    nobody = Connection(Target(f"http://127.0.0.1:{free_port()}", "completions", "smollm2"))
    assert nobody.send("Hello", max_tokens=2)["failure"] == "refused"


@pytest.mark.waits  # timed streams: in the lane run at normal priority, a stall of the client's own is rare
def test_the_timeout_is_a_deadline_for_the_whole_stream(server, keyed):
    """A stream whose every chunk comes well within the timeout, but whose whole answer takes longer than it,
    is a timeout: the deadline runs from sending, not from the last byte read."""
    prompt = "The history of the city begins"
    free = Connection(_target(server))
    free.send(prompt, max_tokens=8)  # a warm-up: a fresh server's first answer stalls on its first pages
    for _ in range(3):  # a profile with no stall near half its length (a busy host can put one in)
        whole = free.send(prompt, max_tokens=64)
        assert whole["failure"] is None and len(whole["chunk_ns"]) >= 16, whole
        waits = np.diff([whole["sent_ns"], *whole["chunk_ns"], whole["done_ns"]]) / 1e9
        took = (whole["done_ns"] - whole["sent_ns"]) / 1e9
        if waits.max() < took / 4:
            break
    free.close()
    timeout = took / 2
    assert waits.max() < timeout / 2  # no single wait comes near the timeout: a per-read timeout would not fire
    cut = Connection(_target(server, timeout_s=timeout))
    got = cut.send(prompt, max_tokens=64)
    cut.close()
    assert got["failure"] == "timeout", got
    assert (got["done_ns"] - got["sent_ns"]) / 1e9 >= timeout


@pytest.fixture(scope="module")
def not_openai(tmp_path_factory):
    """A real HTTP server that is not OpenAI-compatible: Python's own file server."""
    root = tmp_path_factory.mktemp("www")
    (root / "index.html").write_text("<p>hello</p>")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                             str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(100):
            try:
                Connection(Target(f"http://127.0.0.1:{port}", "completions", "x")).get_json("/")
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def test_the_probe_refuses_bad_input(server, keyed, monkeypatch, not_openai):
    with pytest.raises(UsageError, match="is not an OpenAI-compatible server"):
        probe(Target(not_openai, "completions", "smollm2"))
    assert probe(_target(server))["models"] == ["smollm2"]
    with pytest.raises(UsageError, match="is not served at .* it serves smollm2"):
        probe(Target(server, "completions", "gpt-17", API_KEY_ENV))
    with pytest.raises(UsageError, match="nothing answers there"):
        probe(Target(f"http://127.0.0.1:{free_port()}", "completions", "smollm2"))
    with pytest.raises(UsageError, match="api embeddings"):  # llama.cpp's server runs without --embedding
        probe(_target(server, "embeddings"))
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(UsageError, match="--api-key-env"):
        probe(_target(server))


def _run(*args, env=None, db):
    return subprocess.run([sys.executable, "-m", "enginebench", "run", *args, "--db", str(db)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


def test_latency_and_concurrency_against_the_server(server, tmp_path):
    db = tmp_path / "eb.db"
    done = _run("--endpoint", server, "--api", "completions", "--model", "smollm2-135m", "--api-key-env",
                API_KEY_ENV, "--scenario", "latency,concurrency", "--concurrency", "1,2", "--prompt-len", "32",
                "--gen-len", "8", "--duration", "2s", "--warmup", "0.3s", "--min-samples", "3", "--repeat", "1",
                "--slo-ttft", "1", "--slo-tpot", "60000", "--json", env={API_KEY_ENV: KEY}, db=db)
    assert done.returncode == 0, done.stderr[-3000:]
    assert KEY not in done.stdout + done.stderr
    assert KEY.encode() not in db.read_bytes()  # nor in the stored run (its argv holds the variable's name only)
    run = json.loads(done.stdout)
    assert API_KEY_ENV in " ".join(run["config"]["argv"])
    results = run["results"]
    assert [r["status"] for r in results] == ["ok"] * 3
    for r in results:
        f = r["figures"]["requests"]
        assert f["failures"] == {"refused": 0, "timeout": 0, "http": 0, "malformed": 0}
        records = [x for x in r["repetitions"][0]["requests"] if x["phase"] == "measured"]
        assert f["requests"] == len(records) >= 3
        # every figure from the stored records again: TPOT = (e2e - TTFT) / (output tokens - 1)
        tpot = [((x["done_ns"] - x["first_ns"]) / 1e6) / (x["output_tokens"] - 1) for x in records
                if x["output_tokens"] >= 2]
        assert f["tpot_ms"]["p50"]["value"] == pytest.approx(float(np.percentile(tpot, 50)), rel=1e-9)
        ttft = [(x["first_ns"] - x["sent_ns"]) / 1e6 for x in records]
        assert f["ttft_ms"]["p50"]["value"] == pytest.approx(float(np.percentile(ttft, 50)), rel=1e-9)
        assert all(x["input_tokens"] == 32 for x in records)  # the prompt's own tokens, counted locally
        # a TTFT target of 1 ms is met by none, so the goodput is 0 (a check that SLOs are judged per request;
        # not a TPOT target: a client the host leaves waiting reads a stream's chunks at once, a TPOT near 0)
        assert f["goodput_per_s"]["value"] == 0 and f["slo_share"] == 0
        assert r["fidelity"]["metric"] == "greedy_agreement" and 0 <= r["fidelity"]["value"] <= 1
        # the client's own ceiling for 8-token streams: far above what the server generates here
        ceiling = f["client_ceiling"]
        assert ceiling["requests_per_s"] > f["requests_per_s"]["value"] and ceiling["share"] < CLIENT_BOUND
    one, two = (r for r in results if r["scenario"] == "concurrency")
    assert {x["client"] for x in two["repetitions"][0]["requests"]} == {0, 1}
    # the same stored run shown again derives the same figures; its records export as JSONL
    show = subprocess.run([sys.executable, "-m", "enginebench", "show", run["run_id"], "--db", str(db), "--format",
                           "requests"], capture_output=True, text=True, timeout=120)
    rows = [json.loads(line) for line in show.stdout.splitlines()]
    assert len(rows) == sum(len(r["repetitions"][0]["requests"]) for r in results)  # warm-up and tail too
    assert sum(row["phase"] == "measured" for row in rows) == sum(r["figures"]["requests"]["requests"] for r in results)
    assert all(row["e2e_ms"] > 0 and row["ttft_ms"] <= row["e2e_ms"] for row in rows)
    table = subprocess.run([sys.executable, "-m", "enginebench", "show", run["run_id"], "--db", str(db)],
                           capture_output=True, text=True, timeout=120).stdout
    assert "a server's completions API" in table and "TTFT p50 (ms)" in table and "…" not in table
    assert "against a minimal local server; this row reached" in table


def test_the_server_tax_of_ttft_and_tpot_beside_llama_cpp_in_process(server, tmp_path):
    """--engine llamacpp beside the server on the same GGUF: the in-process prefill of the prompt (pp32) and
    decode step (tg8) against the server's TTFT and TPOT for pp32+tg8 requests, in one run."""
    done = _run("--endpoint", server, "--api", "completions", "--model", "smollm2-135m", "--api-key-env",
                API_KEY_ENV, "--engine", "llamacpp", "--scenario", "latency", "--prompt-len", "32", "--gen-len", "8",
                "--duration", "1s", "--warmup", "0.3s", "--min-samples", "5", "--repeat", "1", "--json",
                env={API_KEY_ENV: KEY}, db=tmp_path / "eb.db")
    assert done.returncode == 0, done.stderr[-3000:]
    d = json.loads(done.stdout)
    rows = {(r["engine"], r["workload"]): r for r in d["results"]}
    assert set(rows) == {("endpoint", "pp32+tg8"), ("llamacpp", "pp32"), ("llamacpp", "tg8")}
    assert all(r["status"] == "ok" for r in rows.values()), [r.get("error") for r in rows.values()]
    assert rows["llamacpp", "pp32"]["precision"] == "native"  # the GGUF as it came: the server's own file
    served = rows["endpoint", "pp32+tg8"]["figures"]["requests"]
    ttft, tpot = d["server_tax"]
    assert (ttft["figure"], ttft["workload"], tpot["figure"], tpot["workload"]) == (
        "time to first token", "pp32", "per output token", "tg8")
    prefill = rows["llamacpp", "pp32"]["ttft_ms"] or rows["llamacpp", "pp32"]["latency_ms"]
    assert ttft["in_process_ms"]["value"] == prefill["median"]
    assert ttft["server_ms"]["value"] == served["ttft_ms"]["median"]["median"]
    assert tpot["in_process_ms"]["value"] == rows["llamacpp", "tg8"]["itl_ms"]["median"]
    assert tpot["server_ms"]["value"] == served["tpot_ms"]["median"]["median"]
    for t in (ttft, tpot):
        assert t["tax_ms"]["value"] == pytest.approx(t["server_ms"]["value"] - t["in_process_ms"]["value"])
    print(f"prefill {ttft['in_process_ms']['value']:.1f} ms vs TTFT {ttft['server_ms']['value']:.1f} ms; decode "
          f"{tpot['in_process_ms']['value']:.2f} ms vs TPOT {tpot['server_ms']['value']:.2f} ms")
    assert any(n.startswith("server tax, pp32+tg8, time to first token: llamacpp native in-process ")
               for n in d["notes"]), d["notes"]


def test_offline_issues_every_generation_request_at_once(server, tmp_path):
    """--scenario offline against a generation endpoint: LoadGen's Offline issues every request at once and the
    client threads stream them; each one's TTFT is mostly its wait in the server's queue, by design, so LoadGen's
    verdict judges the row, not the spread of the requests' times."""
    done = _run("--endpoint", server, "--api", "completions", "--model", "smollm2-135m", "--api-key-env",
                API_KEY_ENV, "--scenario", "offline", "--prompt-len", "32", "--gen-len", "8", "--duration", "1s",
                "--min-samples", "12", "--repeat", "1", "--json", env={API_KEY_ENV: KEY}, db=tmp_path / "eb.db")
    assert done.returncode == 0, done.stderr[-3000:]
    (r,) = json.loads(done.stdout)["results"]
    assert r["status"] == "ok" and r["serving"]["all_at_once"], r.get("error")
    assert r["details"]["loadgen"]["settings"]["scenario"] == "offline"
    records = r["repetitions"][0]["requests"]
    assert len(records) >= 12 and all(x["failure"] is None and x["output_tokens"] >= 1 for x in records)
    issued = [x["issued_ns"] for x in records]
    assert max(issued) - min(issued) < 0.05 * (max(x["done_ns"] for x in records) - min(issued))
    f = r["figures"]["requests"]
    assert f["output_tokens_per_s"]["value"] > 0 and f["tpot_ms"]["p50"]["value"] > 0
    # the last request waited for the others: its TTFT is far above the first's (queueing, not noise)
    ttft = sorted((x["first_ns"] - x["sent_ns"]) / 1e6 for x in records)
    assert ttft[-1] > 2 * ttft[0]
    assert r["verdict"]["ok"] == (r["details"]["loadgen"]["result"]["validity"] == "VALID"), r["verdict"]
    assert not any("sample" in x or "CV" in x for x in r["verdict"]["reasons"]), r["verdict"]


def test_bad_input_is_one_line_and_exit_2(server, tmp_path, not_openai):
    db = tmp_path / "eb.db"
    cases = {
        ("--endpoint", not_openai, "--api", "completions"): "is not an OpenAI-compatible server",
        ("--endpoint", server, "--api", "completions", "--served-model", "nope", "--api-key-env", API_KEY_ENV):
            "is not served",
        ("--endpoint", f"http://127.0.0.1:{free_port()}", "--api", "completions"): "nothing answers there",
        ("--endpoint", server, "--api", "embeddings", "--api-key-env", API_KEY_ENV): "--api embeddings",
        ("--endpoint", server, "--api", "completions", "--api-key-env", "NO_SUCH_VARIABLE_HERE"):
            "no such environment variable",
    }
    for args, words in cases.items():
        model = ["--model", "minilm" if "embeddings" in args else "smollm2-135m"]
        done = _run(*args, *model, env={API_KEY_ENV: KEY}, db=db)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not db.exists() or not sqlite3.connect(db).execute(
        "SELECT name FROM sqlite_master WHERE name='results'").fetchone() or \
        sqlite3.connect(db).execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
