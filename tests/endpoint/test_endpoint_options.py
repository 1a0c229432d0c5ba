"""The endpoint options as RunConfig checks them (no server needed): each mistake a one-line UsageError naming
the fix; the key's variable is recorded by name only; and the stream reader's verdicts on server-sent events
(read from bytes: what a server sends, without a server)."""

from __future__ import annotations

import io

import pytest

from enginebench.config import RunConfig
from enginebench.endpoint.client import _stream
from enginebench.errors import UsageError
from enginebench.scenarios.requests import meets_slo, per_request


@pytest.mark.parametrize("keywords, words", [
    ({"api": "chat"}, "--api is for a running server: give --endpoint URL too"),
    ({"served_model": "x"}, "--served-model is for a running server"),
    ({"engines": ["endpoint"]}, "engine endpoint measures a running server"),
    ({"endpoint": "ftp://host"}, "is not an http(s) URL"),
    ({"endpoint": "http://127.0.0.1:9"}, "--endpoint needs --api embeddings|completions|chat"),
    ({"endpoint": "http://127.0.0.1:9", "api": "rerank"}, "unknown --api 'rerank'"),
    ({"endpoint": "http://127.0.0.1:9", "api": "chat", "engines": ["torch"]}, "(chat wraps the prompt in the "
     "server's template): leave out --engine"),
    ({"endpoint": "http://127.0.0.1:9", "api": "embeddings", "engines": ["endpoint"]},
     "--engine endpoint is the server at --endpoint itself"),
    ({"endpoint": "http://127.0.0.1:9", "api": "chat", "api_key_env": "sk-abc=1"}, "not an environment variable"),
    ({"endpoint": "http://127.0.0.1:9", "api": "chat", "scenarios": ["throughput"]},
     "scenario throughput does not run against an endpoint: use latency, server, offline, concurrency"),
])
def test_endpoint_mistakes_are_one_line_errors(keywords, words):
    with pytest.raises(UsageError) as e:
        RunConfig.from_keywords("smollm2-135m", **keywords)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_slos_are_goodput_targets_against_an_endpoint_and_the_key_is_a_name():
    config = RunConfig.from_keywords("smollm2-135m", endpoint="http://127.0.0.1:9/v1", api="completions",
                                     api_key_env="MY_KEY", slo_ttft=500, slo_tpot="50ms",
                                     scenarios=["latency", "concurrency"], concurrency="1,2,4")
    assert config.serving.slo_ttft_ms == 500 and config.serving.slo_tpot_ms == 50
    argv = config.to_argv()
    assert argv[argv.index("--api-key-env") + 1] == "MY_KEY"
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError, match="add --scenario server"):  # without --endpoint they stay the server's
        RunConfig.from_keywords("minilm", slo_p99=50)


class _Response:
    """Bytes as http.client gives a streamed body: readline, read, getheader."""

    def __init__(self, body: bytes, kind: str = "text/event-stream"):
        self.body, self.kind = io.BytesIO(body), kind

    def readline(self):
        return self.body.readline()

    def read(self):
        return self.body.read()

    def getheader(self, name, default=None):
        return self.kind


def _chunk(text, finish=None):
    return (b'data: {"choices": [{"text": "%s", "finish_reason": %s}]}\n\n'
            % (text.encode(), b"null" if finish is None else b'"' + finish.encode() + b'"'))


@pytest.mark.parametrize("body, kind, failure", [
    (_chunk(" Paris") + b": ping\n\n" + _chunk(".") + _chunk("", "length") + b"data: [DONE]\n\n", None, None),
    (_chunk(" Paris") + b"data: {not json\n\n", None, "malformed"),
    (_chunk(" Paris"), None, "malformed"),  # cut short: neither [DONE] nor a finish_reason
    (b'{"choices": []}', "application/json", "malformed"),  # asked for a stream, got a body
    (b'data: {"error": {"message": "boom"}}\n\n', None, "malformed"),
])
def test_the_stream_reader(body, kind, failure):
    record = {"sent_ns": 0, "first_ns": None, "done_ns": None, "status": 200, "failure": None, "error": None}
    got = _stream(record, _Response(body, kind or "text/event-stream"), "completions")
    assert got["failure"] == failure, got
    if failure is None:
        assert got["text"] == " Paris." and len(got["chunk_ns"]) == 2 and got["finish_reason"] == "length"


def test_a_requests_figures_and_its_slos():
    ms = 1_000_000
    r = {"sent_ns": 0, "first_ns": 100 * ms, "chunk_ns": [100 * ms, 130 * ms, 170 * ms], "done_ns": 170 * ms,
         "failure": None, "output_tokens": 3}
    f = per_request(r)
    assert f["ttft_ms"] == 100 and f["e2e_ms"] == 170 and f["tpot_ms"] == 35 and f["itl_ms"] == [30, 40]
    assert meets_slo(r, f, {"slo_ttft_ms": 100, "slo_tpot_ms": 35})
    assert not meets_slo(r, f, {"slo_ttft_ms": 99})
    assert not meets_slo(r, f, {"slo_tpot_ms": 34.9})
    failed = {**r, "failure": "timeout"}
    assert not meets_slo(failed, per_request(failed), {})


def test_find_max_qps_is_offered_against_an_endpoint():
    config = RunConfig.from_keywords("minilm", endpoint="http://127.0.0.1:9/v1", api="embeddings",
                                     scenarios=["server"], find_max_qps=True, slo_p99=50)
    assert config.serving.find_max_qps and "--find-max-qps" in config.to_argv()


def _trial(records: int = 600, failed: int = 0, qps: float = 50.0, validity: str = "VALID"):
    from enginebench.scenarios.endpoint_server import Trial

    gap = int(1e9 / qps)
    recs = [{"issued_ns": i * gap, "sent_ns": i * gap, "done_ns": i * gap + 5_000_000,
             "failure": "timeout" if i < failed else None} for i in range(records)]
    log = {"result_validity": validity, "result_99.00_percentile_latency_ns": 7_000_000,
           "result_perf_constraints_met": validity == "VALID"}
    return Trial(qps, {"schedule_rng_seed": 1}, {}, "", log, recs, 4)


def test_an_endpoint_trial_is_valid_only_when_loadgen_says_so_and_every_request_answered():
    from enginebench.scenarios.endpoint_server import trial_verdict

    v = trial_verdict(_trial(), generates=False)
    assert v["valid"] and v["reasons"] == [] and v["headline"] == {"p99_ms": 7.0} and v["queries"] == 600
    assert v["achieved_qps"] == pytest.approx(50, rel=0.01)
    v = trial_verdict(_trial(failed=3), generates=False)
    assert not v["valid"] and v["reasons"] == ["3 of 600 requests failed (timeout 3)"]
    v = trial_verdict(_trial(validity="INVALID"), generates=False)
    assert not v["valid"] and v["reasons"][0].startswith("LoadGen: INVALID (p99 over the target")
    # a server that answered only half the arrivals' rate fell behind
    slow = _trial()
    slow.records = slow.records[::2]
    v = trial_verdict(slow, generates=False)
    assert not v["valid"] and any(r.startswith("fell behind") for r in v["reasons"])
    # held against the rate of the run's own schedule, which strays from the target: 600 Poisson arrivals
    # scheduled at 46/s for a target of 50 are kept up with at 46
    lucky = _trial(qps=46.0)
    lucky.qps, lucky.log["result_scheduled_samples_per_sec"] = 50.0, 46.0
    assert trial_verdict(lucky, generates=False)["valid"]
    lucky.log.pop("result_scheduled_samples_per_sec")
    assert not trial_verdict(lucky, generates=False)["valid"]


def test_a_server_run_at_a_set_rate_with_failed_requests_is_not_valid():
    """LoadGen hears of a failed request as done (it must, to end the query), so its VALID says nothing of them:
    the verdict counts them, as for each --find-max-qps trial and offline."""
    import numpy as np

    from enginebench.scenarios.base import Measurement
    from enginebench.scenarios.endpoint_server import endpoint_served
    from enginebench.scenarios.server import loadgen_result

    def measured(failed: int) -> Measurement:
        t = _trial(failed=failed)
        return Measurement(worker_samples=[np.full(600, 5_000_000)], items_per_call=1, tokens_per_item=16.0,
                           load_s=0.0, peak_rss_mb=0.0, executed_precision="served", wall_s=12.0,
                           details={"requests": t.records, "loadgen": {"result": loadgen_result(t.log)},
                                    "offered_qps": 50.0, "scheduled_qps": 50.0, "achieved_qps": 50.0})

    assert endpoint_served([measured(0)])["reasons"] == []
    assert endpoint_served([measured(0), measured(3)])["reasons"] == ["3 of 600 requests failed (timeout 3)"]
