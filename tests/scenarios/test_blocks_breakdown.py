"""The blocks scenario's cells, and the breakdown `enginebench blocks` prints read back from its results (no engine
loaded: tests/test_blocks.py measures real ones)."""

import numpy as np

from enginebench.formats.tables.graph import breakdown_dict, breakdown_rows
from enginebench.models.onnx_graph import Block
from enginebench.scenarios.base import Grid, Measurement
from enginebench.scenarios.blocks import WHOLE, Blocks, block_facts, block_settings, breakdown_of
from enginebench.scenarios.registry import scenario_class, settings_label, table_of
from enginebench.store.derive import build_result, failed_result

BLOCKS = [Block("embeddings", ("input_ids",), ("h0",), 10), Block("layer 0", ("h0",), ("h1",), 20),
          Block("pooling", ("h1",), ("sentence_embedding",), 3)]
CONTEXT = {"model": "minilm", "seq_len": 16, "engine_version": "1", "engine_options": {}, "details": {}}


def _cells(engines):
    grid = Grid(engines, ["fp32"], ["titles"], [1], [1], [2], [], 8)
    return Blocks().cells(grid, block_settings(BLOCKS))


def _measured(cell, ms):
    samples = np.full(5, int(ms * 1e6), dtype=np.int64) + np.arange(5)
    m = Measurement([samples], items_per_call=1, tokens_per_item=13.0, load_s=0.1, peak_rss_mb=100.0,
                    executed_precision="fp32", wall_s=0.01)
    return build_result(cell, [(0, m)], **{**CONTEXT, "details": {}})


def test_cells_are_every_block_then_the_whole_graph_engine_by_engine():
    cells = _cells(["onnxruntime", "openvino"])
    assert [(c.engine, c.settings.label()) for c in cells] == [
        (e, n) for e in ("onnxruntime", "openvino") for n in ("embeddings", "layer 0", "pooling", WHOLE)]
    assert {(c.scenario, c.precision, c.workload, c.batch_size, c.threads) for c in cells} == {
        ("blocks", "fp32", "titles", 1, 2)}
    assert scenario_class("blocks").times_kernels  # no session of the plan's model, no fidelity reference job


def test_a_failed_block_reads_as_missing_and_an_engine_with_nothing_measured_says_why():
    ort_cells, crashing, torch = (_cells([e]) for e in ("onnxruntime", "crashy", "torch"))
    results = [_measured(c, 1.0 + k) for k, c in enumerate(ort_cells)]
    results += [failed_result(crashing[1], error="killed by SIGSEGV", **CONTEXT)]
    results += [_measured(c, 2.0) for c in crashing if c.settings.name != "layer 0"]
    results += [failed_result(c, status="skipped", error="torch does not load ONNX graphs", **CONTEXT) for c in torch]
    assert {table_of(r) for r in results} == {"blocks"} and settings_label("blocks", results[1].settings) == "layer 0"

    facts = {"blocks": block_facts(BLOCKS), "engines": ["torch", "onnxruntime", "crashy"], "batch_size": 1,
             "seq_len": 16}
    bd = breakdown_of(list(reversed(results)), facts)
    assert [e.engine for e in bd.engines] == ["torch", "onnxruntime", "crashy"]  # the engines as they were asked
    skipped, ort, crashed = bd.engines
    assert skipped.error == "torch does not load ONNX graphs" and skipped.summaries == [] and not skipped.failed
    assert [round(s.median / 1e6) for s in ort.summaries] == [1, 2, 3] and round(ort.whole.median / 1e6) == 4
    assert crashed.error is None and crashed.summaries[1] is None and crashed.failed == {"layer 0": "killed by SIGSEGV"}

    headers, rows = breakdown_rows(bd)
    assert headers == ["block", "nodes", "onnxruntime ms", "crashy ms"]
    assert rows[1][3] == "—" and rows[3][3].endswith("(blocks missing)") and "missing" not in rows[3][2]
    out = breakdown_dict(bd)
    crashed_json = out["engines"][2]
    assert crashed_json["summaries_ns"][1] is None and crashed_json["failed"] == {"layer 0": "killed by SIGSEGV"}
    assert "failed" not in out["engines"][1]  # an engine that measured every block has the old shape
