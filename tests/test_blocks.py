"""The per-block breakdown: blocks found from the graph's structure, each its own subgraph, each timed."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from enginebench.api import execute, load
from enginebench.cli import main
from enginebench.cli.graph import blocks_plan, blocks_record
from enginebench.engines import engine_class
from enginebench.measure.timing import StoppingRule
from enginebench.models.onnx_export import onnx_encoder
from enginebench.models.onnx_graph import find_blocks
from enginebench.scenarios.blocks import WHOLE, block_files, breakdown_of

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

TINY_RULE = StoppingRule(duration_s=0.05, min_samples=3, warmup_s=0.0, min_warmup=1)


@pytest.fixture(scope="module")
def blocks(minilm):
    return block_files(minilm)


def test_blocks_are_embeddings_each_layer_and_pooling_and_cover_every_node(minilm, blocks):
    names = [b.name for b, _ in blocks]
    assert names == ["embeddings", *(f"layer {i}" for i in range(6)), "pooling"]
    full = onnx.load(str(onnx_encoder(minilm)[0])).graph
    assert sum(b.nodes for b, _ in blocks) == len(full.node)
    assert blocks[0][0].inputs and set(blocks[0][0].inputs) <= {i.name for i in full.input}
    assert blocks[-1][0].outputs == ("sentence_embedding",)


def test_chained_blocks_compute_the_whole_model(minilm, blocks, corpus):
    batch = corpus.batch(0, 2).as_dict()
    whole = ort.InferenceSession(str(onnx_encoder(minilm)[0])).run(None, batch)[0]
    values = dict(batch)
    for block, path in blocks:
        session = ort.InferenceSession(str(path))
        assert [i.name for i in session.get_inputs()] == list(block.inputs)
        values.update(zip(block.outputs, session.run(None, {n: values[n] for n in block.inputs})))
    np.testing.assert_allclose(values["sentence_embedding"], whole, atol=1e-5)


def _breakdown(minilm, engines, workload, timeout_s=600.0):
    """The blocks of `minilm` on `engines` through the launcher, as `enginebench blocks` plans them (not stored):
    the run and its breakdown."""
    plan = blocks_plan(minilm, engines, workload, 1, TINY_RULE, 1, timeout_s, {})
    run = execute(plan, db=None, record=blocks_record(plan, engines, 1, workload.spec.seq_len))
    return run, breakdown_of(run.results, run.config["blocks"])


def test_breakdown_times_every_block_and_explains_engines_that_cannot(minilm, corpus):
    run, result = _breakdown(minilm, ["onnxruntime", "torch"], corpus)
    assert {(r.engine, r.status) for r in run.results} == {("onnxruntime", "ok"), ("torch", "skipped")}
    assert len(run.results) == 2 * 9 and all(r.scenario == "blocks" and r.model == "minilm" for r in run.results)
    by_engine = {e.engine: e for e in result.engines}
    assert "cannot time blocks" in by_engine["torch"].error
    ort_blocks = by_engine["onnxruntime"]
    assert ort_blocks.error is None
    assert len(ort_blocks.summaries) == len(result.blocks) == 8
    assert all(s.median > 0 and s.n >= TINY_RULE.min_samples for s in ort_blocks.summaries)
    assert ort_blocks.whole.median > 0  # the whole graph, timed in the same process for comparison
    from enginebench.formats.frame import export_frame

    frame = export_frame(run)  # the CSV and Parquet exports name each row's block
    ort = frame[frame["engine"] == "onnxruntime"]
    assert list(ort["block"]) == [*(b.name for b in result.blocks), "whole model"]
    assert list(ort["block_index"].isna()) == [False] * len(result.blocks) + [True]


def test_blocks_command_prints_a_row_per_block(capsys, tmp_path):
    code = main(["blocks", "--engine", "onnxruntime", "--duration", "0.05", "--min-samples", "3", "--warmup", "0",
                 "--workload", "titles", "--threads", "1", "--db", str(tmp_path / "eb.db")])
    out = capsys.readouterr().out
    assert code == 0
    for name in ("embeddings", "layer 0", "layer 5", "pooling", "total", "whole model"):
        assert name in out


def test_blocks_refuses_an_engine_that_cannot_load_graphs(capsys):
    assert main(["blocks", "--engine", "torch"]) == 2
    assert "torch does not load ONNX graphs" in capsys.readouterr().err


def test_blocks_refuses_runs_of_n_rows_it_would_not_apply(capsys, tmp_path):
    """The blocks' graphs are sessions the scenario loads itself: `micro_batch` would be silently ignored."""
    assert main(["blocks", "--engine", "onnxruntime", "-o", "onnxruntime.micro_batch=8",
                 "--db", str(tmp_path / "b.db")]) == 2
    err = capsys.readouterr().err
    assert "onnxruntime.micro_batch" in err and "enginebench run" in err and "Traceback" not in err
    assert not (tmp_path / "b.db").exists()  # refused before anything was stored


def _tiny_model(path):
    """pre -> /net/blocks_0/... -> /net/blocks_1/... -> post, with a tensor (scale) that skips block 0."""
    def node(op, name, ins, outs):
        return helper.make_node(op, ins, outs, name=name)

    nodes = [
        node("Relu", "/net/stem/Relu", ["x"], ["h0"]),
        node("Neg", "/net/stem/Neg", ["x"], ["scale"]),
        node("Relu", "/net/blocks_0/act/Relu", ["h0"], ["h1"]),
        node("Mul", "/net/blocks_1/mul/Mul", ["h1", "scale"], ["h2"]),
        node("Abs", "/net/blocks_1/abs/Abs", ["h2"], ["h3"]),
        node("Sigmoid", "/head/Sigmoid", ["h3"], ["y"]),
    ]
    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3])  # noqa: E731
    graph = helper.make_graph(nodes, "tiny", [vi("x")], [vi("y")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_block_boundaries_come_from_the_graph_not_from_minilm(tmp_path):
    _tiny_model(tmp_path / "tiny.onnx")
    found = find_blocks(tmp_path / "tiny.onnx")
    assert [b.name for b in found] == ["embeddings", "layer 0", "layer 1", "pooling"]
    assert [b.nodes for b in found] == [2, 1, 2, 1]
    assert found[2].inputs == ("h1", "scale")  # the tensor that skipped block 0 is fed straight in
    assert set(found[0].outputs) == {"h0", "scale"}


@pytest.mark.skipif(not engine_class("openvino").installed(), reason="openvino is not installed")
def test_openvino_times_the_same_blocks(minilm, titles):
    _, result = _breakdown(minilm, ["openvino"], titles)
    (ov,) = result.engines
    assert ov.error is None, ov.error
    assert len(ov.summaries) == len(result.blocks) and all(s.median > 0 for s in ov.summaries)


def test_a_hung_engine_is_abandoned_after_the_timeout(minilm, titles, monkeypatch):
    """An engine that hangs loading its graphs costs --timeout in a process of its own, which is ended, and once
    more in a fresh one; its other cells then fail with that reason without a process each, and the run ends."""
    monkeypatch.setenv("ENGINEBENCH_ENGINES", "fake-hang-graph=helpers.fake_engines:HangGraphEngine")
    run, result = _breakdown(minilm, ["fake-hang-graph"], titles, timeout_s=1)
    assert [r.status for r in run.results] == ["failed"] * 9
    assert result.engines[0].error == "model load timed out after 1 s (raise --timeout)"
    assert sum("so this cell was not tried" in r.error for r in run.results) == 7  # two loads tried, not nine


def test_a_crash_costs_its_own_block_and_the_engine_goes_on(tmp_path, monkeypatch, capsys):
    """An engine whose layer 1 kills its process when timed loses that block alone: a fresh process of the same
    engine times the blocks after it and the whole graph; the other engine is untouched. The run is stored, and
    `enginebench show` prints the same breakdown."""
    import json

    from helpers.fake_engines import BLOCKS_CRASH_PLUGINS

    monkeypatch.setenv("ENGINEBENCH_ENGINES", BLOCKS_CRASH_PLUGINS)
    db = str(tmp_path / "eb.db")
    code = main(["blocks", "--engine", "fake-crash-block,onnxruntime", "--duration", "0.02", "--min-samples", "3",
                 "--warmup", "0", "--workload", "titles", "--threads", "1", "--db", db, "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    crashed, ort_ = out["engines"]
    assert crashed["engine"] == "fake-crash-block" and crashed["error"] is None
    assert list(crashed["failed"]) == ["layer 1"] and "SIGSEGV" in crashed["failed"]["layer 1"]
    assert [b["name"] for b, s in zip(out["blocks"], crashed["summaries_ns"]) if s is None] == ["layer 1"]
    assert crashed["whole_ns"]["median"] > 0
    assert ort_["error"] is None and "failed" not in ort_ and all(s["median"] > 0 for s in ort_["summaries_ns"])

    run = load(db=db)
    assert run.config["command"] == "blocks" and len(run.results) == 2 * 9
    assert {r.settings["name"] for r in run.results if r.status == "failed"} == {"layer 1"}
    assert main(["show", run.run_id, "--db", db]) == 0
    shown = capsys.readouterr().out
    assert f"run {run.run_id}" in shown and f"{WHOLE}, one graph" in shown
    assert "fake-crash-block: layer 1 not measured:" in shown and "SIGSEGV" in shown
    whole = next(line for line in shown.splitlines() if line.startswith(f"| {WHOLE}, one graph"))
    for fmt in ("md", "html"):  # every text format draws the same blocks table and says what was not measured
        assert main(["show", run.run_id, "--db", db, "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert (whole if fmt == "md" else f"{WHOLE}, one graph") in text and "layer 1 not measured" in text, fmt
