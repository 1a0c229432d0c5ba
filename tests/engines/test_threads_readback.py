"""Each engine records the threads it really uses (details["threads_used"]), read back where the library says."""

import pytest
from helpers.sessions import load_session

from enginebench.formats.tables.encoder import table_rows
from enginebench.store.labels import threads_label
from enginebench.store.model import Result

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`


def test_torch_reports_torch_get_num_threads(minilm):
    import torch

    session = load_session("torch", minilm, "fp32", threads=2)
    assert session.details["threads_used"] == torch.get_num_threads() == 2
    assert session.details["threads_source"] == "torch.get_num_threads()"


def test_onnxruntime_reports_the_sessions_own_options(minilm):
    session = load_session("onnxruntime", minilm, "fp32", threads=3)
    assert session.details["threads_used"] == session.session.get_session_options().intra_op_num_threads == 3


@pytest.mark.parametrize("policy, spins", [(None, True), ("ACTIVE", True), ("passive", False)])
def test_onnxruntime_threads_spin_unless_the_wait_policy_is_passive(minilm, monkeypatch, policy, spins):
    """OMP_WAIT_POLICY=PASSIVE, which OpenMP's pools (torch, oneDNN, llama.cpp) read themselves, reaches ONNX
    Runtime's own pool too: one setting for every engine of a run, read back from the session."""
    if policy is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    session = load_session("onnxruntime", minilm, "fp32", threads=2)
    assert session.details["threads_spin"] is spins
    options = session.session.get_session_options()
    if spins:
        with pytest.raises(RuntimeError):  # ONNX Runtime's default: spinning, no entry
            options.get_session_config_entry("session.intra_op.allow_spinning")
    else:
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_openvino_reports_the_compiled_models_threads_even_when_capped(minilm):
    pytest.importorskip("openvino")
    import os

    session = load_session("openvino", minilm, "fp32", threads=256)  # more than any machine here has
    used = session.details["threads_used"]
    assert used == int(session.compiled.get_property("INFERENCE_NUM_THREADS"))
    assert 1 <= used <= os.cpu_count() < 256  # OpenVINO caps it at the cores: the request is not what ran


def test_ctranslate2_says_its_threads_are_the_requested_value(minilm):
    pytest.importorskip("ctranslate2")
    session = load_session("ctranslate2", minilm, "fp32", threads=2)
    assert session.details["threads_used"] == 2 and session.details["threads_source"].startswith("requested")
    assert session.details["inter_threads_used"] == session.encoder.num_encoders == 1


def test_jax_records_the_nproc_its_backend_read(minilm):
    pytest.importorskip("jax")
    session = load_session("jax", minilm, "fp32", threads=2)
    assert isinstance(session.details["threads_used"], int) and "NPROC" in session.details["threads_source"] + \
        session.details["threads_control"]
    assert session.executed_precision == "fp32" and "dtype" in session.details["executed_precision_source"]


def test_tinygrad_says_the_option_has_no_effect(tmp_path, minilm):
    pytest.importorskip("tinygrad")
    from helpers.tiny_bert import make_tiny_bert

    from enginebench.models import resolve_model

    tiny = resolve_model(str(make_tiny_bert(tmp_path, minilm.path)))
    session = load_session("tinygrad", tiny, "fp32", threads=2)
    assert session.details["threads_used"] is None
    assert session.details["threads_note"] == "tinygrad's CPU backend ignores the thread option"
    assert session.executed_precision == "fp32"  # read from the weights' dtype


def _result(threads, details):
    return Result(engine="e", model="m", precision="fp32", scenario="latency", workload="corpus", batch_size=1,
                  seq_len=128, workers=1, threads=threads, details=details, samples=[1],
                  latency_ms={"median": 1.0, "ci95": [0.9, 1.1], "p99": 1.2},
                  throughput={"items_per_s": 1.0, "ci95": [0.9, 1.1], "tokens_per_s": 1.0},
                  verdict={"ok": True, "reasons": []})


def test_threads_column_shows_what_was_used_where_it_differs():
    assert threads_label(_result(2, {"threads_used": 2})) == "1×2"
    assert threads_label(_result(2, {"threads_used": 1})) == "1×2→1"
    assert threads_label(_result(2, {"threads_used": None, "threads_note": "ignored"})) == "1×2 (ignored)"
    assert threads_label(_result(2, {})) == "1×2"  # results stored before threads were read back
    headers, rows, constants = table_rows([_result(2, {"threads_used": 2}), _result(2, {"threads_used": None})])
    assert [row[headers.index("workers×threads")] for row in rows] == ["1×2", "1×2 (ignored)"]
