"""The charts: drawn only where the data supports them, the Pareto front, PNG files from `enginebench plot`.

The synthetic runs built here (no engine measured) serve the HTML report's tests too."""

from __future__ import annotations

import pytest
from helpers.plotted_runs import (
    HOSTILE,
    decoder_run,
    encoder_run,
    report_cli,
    store_runs,
    two_workload_run,
)

from enginebench.formats.charts import build_charts, pareto_front, write_pngs
from enginebench.store.model import Run


def _names(charts) -> list[str]:
    return [c.name for c in charts.drawn]


def test_an_encoder_run_gets_every_encoder_chart():
    charts = build_charts([encoder_run()])
    # a single stream and a pool of workers are different work: fidelity against speed is drawn for each
    assert _names(charts) == ["latency-by-engine", "latency-distribution", "throughput-by-workers",
                              "fidelity-vs-speed-latency-scenario", "fidelity-vs-speed-throughput-scenario"]
    assert charts.not_drawn == []
    latency = charts.drawn[0].figure.axes[0]
    assert latency.get_ylabel() == "median latency per call (ms)"
    assert [t.get_text() for t in latency.get_xticklabels()] == ["torch fp32", "onnxruntime fp32", "onnxruntime int8",
                                                                 "openvino fp32"]
    assert [t.get_text() for t in latency.get_legend().get_texts()] == ["batch 1", "batch 8"]
    # one violin per successful result; the failed and skipped cells have no samples to draw
    distribution = charts.drawn[1].figure.axes[0]
    assert len(distribution.get_yticklabels()) == 14


def test_each_chart_holds_one_work_alone():
    charts = build_charts([two_workload_run()])
    names = _names(charts)
    assert names == ["latency-by-engine-titles-seq-16", "latency-distribution-titles-seq-16",
                     "throughput-by-workers-titles-seq-16", "fidelity-vs-speed-titles-seq-16-latency-scenario",
                     "fidelity-vs-speed-titles-seq-16-throughput-scenario",
                     "latency-by-engine-corpus-seq-128", "latency-distribution-corpus-seq-128",
                     "throughput-by-workers-corpus-seq-128", "fidelity-vs-speed-corpus-seq-128-latency-scenario",
                     "fidelity-vs-speed-corpus-seq-128-throughput-scenario"]
    by_name = {c.name: c for c in charts.drawn}
    assert by_name["latency-by-engine-corpus-seq-128"].title == "Latency by engine and batch size · corpus (seq 128)"
    for work, factor in (("titles-seq-16", 1), ("corpus-seq-128", 5)):
        bars = by_name[f"latency-by-engine-{work}"].figure.axes[0].patches
        assert len(bars) == 8  # 4 engines x 2 batch sizes: the other work's bars are on its own chart
        torch_b1 = [r for r in encoder_run().results if (r.engine, r.batch_size, r.scenario) == ("torch", 1, "latency")]
        assert bars[0].get_height() == pytest.approx(factor * torch_b1[0].latency_ms["median"])


def test_two_corpora_under_one_name_or_two_paddings_are_two_works_on_charts_of_their_own():
    """The facets are the cells' identities' work (store/identity.py), not the workload's name: runs of the
    "corpus" workload on two different texts, or with each batch cut to its longest input, never share an axis."""
    def corpus_run(run_id: str, digest: str, padding: str = "fixed") -> Run:
        run = encoder_run(run_id=run_id)
        workloads = {"titles": {"name": "titles", "seed": 0, "seq_len": 16, "source": "/data/docs.jsonl",
                                "digest": digest, "padding": padding}}
        return Run(run_id, run.created_at, run.machine, {**run.config, "workloads": workloads}, list(run.results))

    names = _names(build_charts([corpus_run("a", "1" * 24), corpus_run("b", "2" * 24)]))
    assert "latency-by-engine-titles-seq-16-corpus-11111111" in names
    assert "latency-by-engine-titles-seq-16-corpus-22222222" in names
    padded = build_charts([corpus_run("a", "1" * 24), corpus_run("b", "1" * 24, padding="dynamic")])
    titles = [c.title for c in padded.drawn if c.name.startswith("latency-by-engine")]
    assert titles == ["Latency by engine and batch size · titles (seq 16)",
                      "Latency by engine and batch size · titles (seq 16 · dynamic padding)"]
    one = build_charts([corpus_run("a", "1" * 24), corpus_run("b", "1" * 24)])  # the same work twice: one chart
    assert [c.name for c in one.drawn if c.name.startswith("latency-by-engine")] == ["latency-by-engine"]


def test_the_worker_chart_is_left_out_when_one_worker_count_ran():
    run = encoder_run()
    run.results = [r for r in run.results if r.scenario != "throughput" or r.workers == 2]
    charts = build_charts([run])
    assert "throughput-by-workers" not in _names(charts)
    assert any(line.startswith("throughput by workers:") for line in charts.not_drawn)


def test_a_decoder_run_gets_tokens_per_s_by_precision_and_no_encoder_chart():
    charts = build_charts([decoder_run()])
    assert _names(charts) == ["decoder-tokens-per-s", "decoder-fidelity-vs-speed"]
    panels = charts.drawn[0].figure.axes
    assert [ax.get_title() for ax in panels] == ["pp32 (prefill)", "tg16 (decode)"]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["fp32", "int8"]
    assert panels[0].get_ylabel() == "tokens/s"
    assert charts.not_drawn == []


def test_failed_results_alone_draw_nothing():
    run = encoder_run()
    run.results = [r for r in run.results if r.status != "ok"]
    assert build_charts([run]).drawn == []


def test_the_pareto_front_keeps_what_nothing_beats_on_both_axes():
    points = [(100.0, 0.99), (50.0, 1.0), (80.0, 0.98), (100.0, 0.95), (120.0, 0.90), (10.0, 1.0)]
    assert pareto_front(points) == [4, 0, 1]
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_chart_text_is_escaped_in_svg_and_never_read_as_a_formula():
    run = encoder_run(model=HOSTILE + " $x^2$")
    other = encoder_run(model="minilm", run_id="enc2")  # two models: the model is part of every label
    charts = build_charts([run, other])
    svg = "".join(c.svg() for c in charts.drawn)
    assert "<script>" not in svg and "<img" not in svg
    assert "&lt;script&gt;" in svg
    assert "$x^2$" in svg  # shown as typed, not as mathtext


def test_plot_writes_one_png_per_chart(tmp_path):
    charts = build_charts([encoder_run(), decoder_run()])
    paths = write_pngs(charts, tmp_path / "new" / "folder")
    assert [p.name for p in paths] == [f"{c.name}.png" for c in charts.drawn]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


@pytest.fixture
def stored(tmp_path):
    return store_runs(tmp_path / "runs.db")


def test_the_plot_command_prints_the_paths_it_wrote(stored, tmp_path, capsys):
    out = tmp_path / "plots"
    assert report_cli()("plot", "enc1", "--output", str(out), "--db", str(stored)) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / f"{name}.png") for name in
                       ("latency-by-engine", "latency-distribution", "throughput-by-workers",
                        "fidelity-vs-speed-latency-scenario", "fidelity-vs-speed-throughput-scenario")]
    assert all((out / p).exists() for p in printed)


def test_the_plot_command_says_what_is_wrong_in_one_line(stored, tmp_path):
    from enginebench.errors import UsageError

    with pytest.raises(UsageError, match="no run 'nope'"):
        report_cli()("plot", "nope", "--output", str(tmp_path), "--db", str(stored))
    with pytest.raises(UsageError, match="no database"):
        report_cli()("plot", "--output", str(tmp_path), "--db", str(tmp_path / "missing.db"))
    a_file = tmp_path / "file.png"
    a_file.write_text("")
    with pytest.raises(UsageError, match="is a file"):
        report_cli()("plot", "--output", str(a_file), "--db", str(stored))
