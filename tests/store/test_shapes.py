"""A Result's dict fields are typed records (store/model.py, store/records.py): every key a built result
holds is declared, and under ENGINEBENCH_STRICT_SHAPES=1 (the test suite's setting) one that is not is refused."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.measurements import measurement

from enginebench.plan import Cell, Serving
from enginebench.store.derive import build_result
from enginebench.store.model import Result
from enginebench.store.shapes import STRICT_ENV, undeclared


def _served(extra_serving: dict | None = None, extra_trial: dict | None = None) -> Result:
    trial = {"qps": 10.0, "valid": True, "achieved_qps": 9.9, "queries": 500, "p99_ms": 3.0, "reasons": [],
             "seeds": {"schedule_rng_seed": 1}, **(extra_trial or {})}
    serving = {"scenario": "server", "target_qps": 10.0, "achieved_qps": 9.9, "achieved_qps_ci95": [9.0, 10.8],
               "latency_ms": {q: {"value": 2.0, "ci95": None} for q in ("p50", "p90", "p99")},
               "queue": {"max": 2, "first_quarter_mean": 0.1, "last_quarter_mean": 0.1, "series": [[0.0, 1]]},
               "find_max_qps": {"max_qps": 10.0, "bracket": [10.0, 10.5], "trials": [trial]},
               "valid": True, "reasons": [], **(extra_serving or {})}
    return Result("fake", "minilm", "fp32", "server", "titles", 1, 16, 1, 1, samples=[1_000_000],
                  latency_ms={"median": 1.0}, verdict={"ok": True, "reasons": []}, serving=serving)


def test_a_result_of_declared_keys_has_nothing_undeclared():
    assert undeclared(_served()) == []


def test_an_undeclared_key_is_named_by_its_path_however_deep():
    assert undeclared(_served({"p999_ms": 4.0})) == ["serving.p999_ms"]
    assert undeclared(_served(extra_trial={"p95_ms": 2.5})) == ["serving.find_max_qps.trials[0].p95_ms"]
    r = _served()
    r.serving["latency_ms"]["p99"]["stdev"] = 0.1
    r.fidelity = {"metric": "min_cosine", "value": 0.99, "ok": True, "threshold": 0.98, "cosine_p5": 0.99}
    assert undeclared(r) == ["fidelity.cosine_p5", "serving.latency_ms.p99.stdev"]


def test_open_fields_stay_open():
    """settings and engine options carry what scenarios and engines take as options: no declared keys."""
    r = _served()
    r.engine_options = {"mode": "fast"}
    r.settings = {"clients": 4}
    assert undeclared(r) == []


def test_details_keys_are_declared_too():
    """details is a typed record (store/records.py ResultDetails), open only where a key holds an open dict."""
    r = _served()
    r.details = {"quantization": {"anything": 1}, "gemm_probe": {"before": 1.0, "after": 1.1, "n": 512}, "wall_s": 1.0}
    assert undeclared(r) == []
    r.details = {"anything": {"nested": 1}, "gemm_probe": {"before": 1.0, "median": 1.1}}
    assert undeclared(r) == ["details.anything", "details.gemm_probe.median"]


def _build(figures: dict):
    cell = Cell("fake", "fp32", "server", "titles", 1, 1, 1, serving=Serving(qps=10.0, slo_p99_ms=50.0))
    m = measurement(np.full(20, 1_000_000))
    m.details = {"serving": figures}
    return build_result(cell, [(0, m)], model="minilm", seq_len=16, engine_version="1", engine_options={},
                        details={})


def test_building_a_result_with_an_undeclared_key_is_refused_in_the_suite_and_kept_for_a_user(monkeypatch):
    figures = {**_served().serving, "loadgen": {"validity": "VALID"}, "p999_ms": 4.0}
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(ValueError, match=r"undeclared keys in a server result: serving\.p999_ms"):
        _build(figures)
    figures.pop("p999_ms")
    assert _build(figures).serving["achieved_qps"] == 9.9
    monkeypatch.setenv(STRICT_ENV, "0")  # a user's run: a shape mistake must not cost the measurement
    assert _build({**figures, "p999_ms": 4.0}).serving["p999_ms"] == 4.0
