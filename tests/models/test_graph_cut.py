"""A partial model: the exported graph's nodes, a cut at a layer's output, its reference and its errors."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch
from helpers.sessions import load_session

from enginebench.cli import main
from enginebench.engines import engine_class
from enginebench.models.cut import cut_model_spec
from enginebench.measure.fidelity import compare_embeddings
from enginebench.models.onnx_export import onnx_encoder
from enginebench.models.onnx_graph import list_nodes

pytestmark = pytest.mark.engine  # loads real engines and models: not in `make test-fast`

LAYER = 2
NODE = f"/transformer/encoder/layer.{LAYER}/output/LayerNorm/LayerNormalization"


@pytest.fixture(scope="module")
def onnx_path(minilm):
    return onnx_encoder(minilm)[0]


def test_nodes_lists_every_node_with_outputs_and_shapes(onnx_path, minilm):
    nodes = list_nodes(onnx_path)
    graph = onnx.load(str(onnx_path)).graph
    assert [n.name for n in nodes] == [n.name for n in graph.node]
    layer_outputs = [n for n in nodes if n.op_type == "LayerNormalization" and "/output/LayerNorm" in n.name
                     and "attention" not in n.name]
    assert len(layer_outputs) == 6  # one per MiniLM-L6 layer
    assert all(n.shapes[0].endswith(f", {minilm.hidden_size}]") for n in layer_outputs)  # inferred [?, ?, 384]
    assert nodes[-1].outputs == ("sentence_embedding",)


def test_nodes_command_filters_and_keeps_graph_indices(onnx_path, capsys):
    assert main(["nodes", "--grep", f"layer.{LAYER}/output/LayerNorm", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [NODE]
    graph = onnx.load(str(onnx_path)).graph
    assert graph.node[rows[0]["index"]].name == NODE
    assert rows[0]["op_type"] == "LayerNormalization"


def test_cut_at_a_layer_runs_on_onnxruntime_and_equals_that_layers_hidden_states(minilm, corpus):
    cut = cut_model_spec(minilm, NODE)
    path, details = onnx_encoder(cut)
    assert details["cut_output"].startswith(NODE)
    sub = onnx.load(str(path)).graph
    assert len(sub.node) < len(onnx.load(str(onnx_encoder(minilm)[0])).graph.node)
    assert [o.name for o in sub.output] == [details["cut_output"]]

    batch = corpus.fidelity_inputs()
    session = load_session("onnxruntime", cut)
    hidden = session.run(session.prepare(batch))
    assert hidden.shape == (batch.size, batch.seq_len, minilm.hidden_size)

    # An independent check that the cut is where the name says: transformers' own hidden state of that layer.
    from transformers import AutoModel

    model = AutoModel.from_pretrained(minilm.path, use_safetensors=True, local_files_only=True).eval()
    with torch.inference_mode():
        states = model(**{k: torch.from_numpy(v) for k, v in batch.as_dict().items()},
                       output_hidden_states=True).hidden_states
    fidelity = compare_embeddings(hidden, states[LAYER + 1].numpy(), "fp32")
    assert fidelity["ok"], fidelity
    assert fidelity["items"] == batch.size


def test_engines_that_cannot_cut_give_a_reason(minilm):
    cut = replace(minilm, until=NODE)
    assert "cannot run a model cut" in engine_class("torch").why_not_model(cut)
    assert engine_class("onnxruntime").why_not_model(cut) is None
    assert engine_class("torch").why_not_model(minilm) is None


def test_fidelity_compares_any_rank_per_item():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 5, 6))
    out = ref.copy()
    out[2, 0, 0] += 3.0  # only item 2 differs
    result = compare_embeddings(out, ref, "fp32")
    assert result["items"] == 4 and not result["ok"]
    cosines = [compare_embeddings(out[i:i + 1], ref[i:i + 1], "fp32")["value"] for i in range(4)]
    assert result["value"] == pytest.approx(min(cosines)) and cosines[2] < 0.99 < cosines[0]
    zeros = np.zeros((2, 3))
    assert compare_embeddings(zeros, zeros, "fp32")["ok"]  # equal zero outputs agree


def test_unknown_node_is_a_one_line_usage_error(capsys, tmp_path):
    code = main(["run", "--until", "no/such/node", "--engine", "onnxruntime", "--db", str(tmp_path / "x.db")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "no/such/node" in err and "enginebench nodes --model minilm" in err


def test_run_until_skips_torch_and_compares_with_onnxruntime_on_the_same_cut(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "enginebench", "run", "--until", NODE, "--engine", "onnxruntime,torch",
                        "--workload", "titles", "--scenario", "latency", "--batch-size", "1", "--duration", "0.2",
                        "--min-samples", "3", "--warmup", "0.05", "--repeat", "1", "--db", str(tmp_path / "r.db"), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    run = json.loads(p.stdout)
    assert run["config"]["model"]["until"] == NODE
    by_engine = {r["engine"]: r for r in run["results"]}
    assert by_engine["torch"]["status"] == "skipped"
    assert "cut" in by_engine["torch"]["error"]
    ort = by_engine["onnxruntime"]
    assert ort["status"] == "ok", ort
    assert ort["fidelity"]["ok"] and ort["fidelity"]["value"] > 0.9999
    assert ort["fidelity"]["reference"] is True  # onnxruntime fp32 is the cut's reference: marked, not a pass


def test_a_cut_takes_only_the_inputs_it_needs(minilm, titles):
    cut = cut_model_spec(minilm, "/transformer/embeddings/LayerNorm/LayerNormalization")
    graph = onnx.load(str(onnx_encoder(cut)[0])).graph
    assert [i.name for i in graph.input] == ["input_ids", "token_type_ids"]  # embeddings never read the mask
    session = load_session("onnxruntime", cut)
    batch = titles.fidelity_inputs()
    assert session.run(session.prepare(batch)).shape == (batch.size, batch.seq_len, minilm.hidden_size)


@pytest.mark.skipif(not engine_class("openvino").installed(), reason="openvino is not installed")
def test_openvino_runs_the_same_cut_and_matches_onnxruntime_on_it(minilm, corpus):
    cut = cut_model_spec(minilm, NODE)
    batch = corpus.fidelity_inputs()
    reference = load_session("onnxruntime", cut)
    expected = reference.run(reference.prepare(batch))
    session = load_session("openvino", cut)
    fidelity = compare_embeddings(session.run(session.prepare(batch)), expected, "fp32")
    assert fidelity["ok"], fidelity
