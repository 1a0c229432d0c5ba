"""The client's own ceiling (scenarios/requests.py): the minimal local server answers every API as the client
expects, the ceiling is what the client drives against it, and a figure at CLIENT_BOUND of that ceiling or more
is flagged in the verdict while one far below it is not."""

from __future__ import annotations

import socket
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.measurements import measurement

from enginebench.endpoint.client import Connection, Target
from enginebench.endpoint.minimal_server import MODEL, minimal_server
from enginebench.formats.tables.endpoint import difference_ci, server_tax
from enginebench.measure.stats import over_processes
from enginebench.plan import Cell
from enginebench.scenarios.base import Measurement
from enginebench.scenarios.requests import CLIENT_BOUND, client_ceiling
from enginebench.store.derive import build_result
from enginebench.store.model import Run


def test_the_minimal_server_answers_every_api_as_the_client_expects():
    with minimal_server(dim=16) as url:
        port = int(url.rsplit(":", 1)[1])
        for api, item, max_tokens in (("embeddings", ["a", "b", "c"], None), ("completions", "hi", 5),
                                      ("chat", "hi", 3)):
            conn = Connection(Target(url, api, MODEL))
            first, second = conn.send(item, max_tokens), conn.send(item, max_tokens)  # one kept-alive connection
            conn.close()
            for r in (first, second):
                assert r["failure"] is None, r["error"]
                if api == "embeddings":
                    assert len(r["embeddings"]) == 3 and {len(v) for v in r["embeddings"]} == {16}
                else:
                    assert len(r["chunk_ns"]) == max_tokens and r["finish_reason"] == "length"
                    assert r["usage_completion_tokens"] == max_tokens
    with pytest.raises(OSError):  # ended on leaving
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _session(api: str = "embeddings") -> SimpleNamespace:
    return SimpleNamespace(target=Target("http://127.0.0.1:9", api, "served-name", "SOME_KEY"), embedding_dim=8)


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_the_ceiling_is_measured_once_per_shape_of_load_and_is_what_the_client_drove():
    run = SimpleNamespace(cache={})
    items = [["a b", "c"]] * 4
    one = client_ceiling(run, _session(), items, None, clients=1)
    assert one["requests_per_s"] > 0 and one["failed"] == 0 and one["clients"] == 1 and one["window_s"] >= 1.0
    assert client_ceiling(run, _session(), items, None, clients=1) is one  # cached for the job
    two = client_ceiling(run, _session(), items, None, clients=2)
    assert two is not one and two["clients"] == 2 and len(run.cache["client_ceiling"]) == 2
    streamed = client_ceiling(run, _session("completions"), ["hi"] * 4, 4, clients=1)
    # every answer a stream of 4 chunks: the chunk rate is the request rate times 4 (the ceiling's own window)
    assert streamed["output_chunks_per_s"] == pytest.approx(4 * streamed["requests_per_s"])


def _endpoint_measurement(rate: float, ceiling: float) -> Measurement:
    """One client's second of requests at `rate` per second, back to back, with the ceiling measured."""
    n, second = int(rate), 1_000_000_000
    records = [{"client": 0, "item": 0, "sent_ns": i * second // n, "first_ns": (i + 1) * second // n,
                "done_ns": (i + 1) * second // n, "status": 200, "failure": None, "error": None,
                "phase": "measured", "input_tokens": 5} for i in range(n)]
    details = {"requests": records, "window_ns": second, "window": [0, second], "clients": 1,
               "endpoint": {"url": "http://127.0.0.1:9", "api": "embeddings", "slo": {}},
               "client_ceiling": {"requests_per_s": ceiling, "clients": 1, "window_s": 1.0, "failed": 0}}
    return Measurement(worker_samples=[np.full(n, second // n, dtype=np.int64)], items_per_call=1,
                       tokens_per_item=5.0, load_s=0.1, peak_rss_mb=10.0, executed_precision="served", wall_s=1.0,
                       details=details)


@pytest.mark.parametrize("rate, flagged", [(80, True), (50, True), (10, False), (45, False)])
def test_a_figure_near_the_clients_ceiling_is_flagged_and_one_far_below_is_not(rate, flagged):
    cell = Cell("endpoint", "served", "latency", "titles", 1, 1, 1)
    r = build_result(cell, [(0, _endpoint_measurement(rate, 100.0))], model="minilm", seq_len=16,
                     engine_version=None, engine_options={}, details={})
    ceiling = r.figures["requests"]["client_ceiling"]
    assert ceiling["share"] == pytest.approx(rate / 100.0, rel=0.05) and ceiling["requests_per_s"] == 100.0
    said = [x for x in r.verdict["reasons"] if "client's own ceiling" in x]
    assert bool(said) == flagged == (ceiling["share"] >= CLIENT_BOUND), r.verdict
    if flagged:
        assert said[0].startswith(f"{round(100 * ceiling['share'])}% of the client's own ceiling (100 req/s with 1 "
                                  "client")
        assert not r.verdict["ok"]


def test_the_server_tax_pairs_the_engines_latency_cell_whatever_else_it_ran():
    """An engine beside the server that ran throughput too (after latency, on the same texts): the tax is still
    the server's end to end against the engine's latency call, not lost under the other cell."""
    context = dict(model="minilm", seq_len=16, engine_version=None, engine_options={}, details={})
    served = build_result(Cell("endpoint", "served", "latency", "titles", 1, 1, 1),
                          [(0, _endpoint_measurement(50, 100.0))], **context)
    alone = build_result(Cell("torch", "fp32", "latency", "titles", 1, 1, 2),
                         [(0, measurement(np.full(12, 5_000_000)))], **context)
    workers = build_result(Cell("torch", "fp32", "throughput", "titles", 1, 2, 1),
                           [(0, measurement(np.full(12, 9_000_000), workers=2))], **context)
    (tax,) = server_tax(Run("r", "t", {}, {}, [served, alone, workers]))
    assert tax["figure"] == "per request" and tax["in_process_ms"]["value"] == alone.latency_ms["median"] == 5.0
    assert tax["server_ms"]["value"] == served.figures["requests"]["e2e_ms"]["median"]["median"]


@pytest.mark.parametrize("processes", [(2, 2), (3, 3), (5, 5), (10, 10), (3, 2), (2, 3)])
@pytest.mark.parametrize("spread", [0.03, 0.1, 0.3])
def test_the_tax_interval_covers_the_true_difference_93_to_98_percent(processes, spread):
    """Each side as server_tax gets it (the geometric mean over processes with its t interval, measure/stats.py),
    its processes spread lognormally around a true median of 20 ms (the server) and 12 ms (in-process), as many
    processes a side as the run's --repeat (one lost on a side too): Welch's interval over the two holds the true
    tax of 8 ms in 93-98% of 4,000 simulated runs, as a 95% interval must (the far ends of the two intervals
    joined, the interval before it, held it in 99.5%)."""
    rng = np.random.default_rng([*processes, int(spread * 100)])
    covered = 0
    for _ in range(4000):
        sides = []
        for true, k in zip((20.0, 12.0), processes):
            point, lo, hi = over_processes(true * np.exp(spread * rng.standard_normal(k)))
            sides.append({"median": point, "ci95": [lo, hi], "processes": k})
        lo, hi = difference_ci(*sides)
        covered += lo <= 8.0 <= hi
    print(f"{processes} processes, spread {spread:.0%}: {covered / 4000:.1%}")
    assert 0.93 <= covered / 4000 <= 0.98
