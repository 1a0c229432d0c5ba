"""The HTML report without a browser: self-contained, the charts the data supports, every name escaped,
every warning and failure shown, and the recommendation when there is one."""

from __future__ import annotations

import re
from html import escape

import pytest
from helpers.plotted_runs import HOSTILE, decoder_run, encoder_run, report_cli, store_runs, two_workload_run

from enginebench.errors import UsageError
from enginebench.formats import html as html_format
from enginebench.formats.html import html_report, write_html_report


@pytest.fixture
def stored(tmp_path):
    return store_runs(tmp_path / "runs.db")


@pytest.fixture(scope="module")
def page() -> str:
    return html_report([encoder_run(model=HOSTILE), decoder_run()])


def _references(page: str) -> list[str]:
    """Every src and href attribute of every element (xlink:href in the SVG too)."""
    from html.parser import HTMLParser

    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value or "" for name, value in attrs if name.split(":")[-1] in ("src", "href"))

    Collect().feed(page)
    return found


def test_nothing_is_fetched_from_elsewhere(page):
    references = _references(page)
    assert references  # the favicon's data: URL at least
    assert all(ref.startswith(("#", "data:")) for ref in references), references
    assert "<script" not in page.lower()  # no scripts of ours, and none injected
    assert "default-src 'none'" in page  # the browser refuses any fetch the page would try


def test_the_charts_the_data_supports_are_inline_svg(page):
    for name in ("latency-by-engine", "latency-distribution", "throughput-by-workers",
                 "fidelity-vs-speed-latency-scenario", "fidelity-vs-speed-throughput-scenario",
                 "decoder-tokens-per-s", "decoder-fidelity-vs-speed"):
        figure = re.search(rf'<figure id="{name}">(.*?)</figure>', page, flags=re.S)
        assert figure and "<svg" in figure.group(1) and "<path" in figure.group(1), name
    assert "<?xml" not in page and "Not drawn" not in page


def test_a_chart_the_data_cannot_support_gets_one_line_instead():
    run = encoder_run()
    run.results = [r for r in run.results if r.scenario != "throughput" or r.workers == 2]
    page = html_report([run])
    assert 'id="throughput-by-workers"' not in page
    assert re.search(r"Not drawn: throughput by workers: [^<]*\.</p>", page)


def test_every_user_supplied_name_is_escaped(page):
    assert HOSTILE not in page and "<img" not in page
    assert escape(HOSTILE) in page
    assert "&lt;/pre&gt;&lt;script&gt;" in page  # an engine option in the run's configuration
    assert "Test CPU &lt;b&gt;" in page  # the machine's own strings too
    run = encoder_run(run_id="<b>run</b>")
    assert "<b>run</b>" not in html_report([run])


def test_tables_hold_every_result_with_its_uncertainty(page):
    encoder_rows = re.findall(r"<tr class=\"(ok|failed|skipped)\"><td>\d+</td>", page)
    # a skipped cell is a note (test_every_warning_and_failure_is_listed), not a row of dashes
    assert encoder_rows.count("ok") == 14 and encoder_rows.count("failed") == 1 and encoder_rows.count("skipped") == 0
    assert "<th>median (ms)</th>" in page and " ± " in page
    assert "<th>t/s</th>" in page and "tg16" in page  # the decoder table


def test_every_warning_and_failure_is_listed(page):
    warnings = page[page.index('id="warnings"'):page.index('id="machine"')]
    assert "jax fp32 latency titles b1: failed: could not load" in warnings and "&lt;boom&gt;" in warnings
    assert "tinygrad int8: skipped (1 cell): int8 is not supported by tinygrad" in warnings
    summary = page[:page.index('id="recommendation"')]
    assert "1 failed" in summary and "1 skipped" in summary


def test_the_machine_and_versions_are_shown(page):
    machine = page[page.index('id="machine"'):page.index('id="config"')]
    assert "2 physical" in machine and "affinity" in machine and "0-3" in machine
    assert "torch 1.0" in machine and "numpy 2.0" in machine


def test_runs_from_different_cpus_are_flagged():
    other = encoder_run(run_id="enc2")
    other.machine = {**other.machine, "cpu": "Another CPU"}
    assert "different CPUs" in html_report([encoder_run(), other])


def test_the_recommendation_is_shown_escaped(monkeypatch):
    class Recommendation:
        command = "enginebench run --engine onnxruntime --precision int8"
        best = "a Result"
        why_none = None
        excluded: dict = {}

        def lines(self):
            return ["Use onnxruntime int8 <fast>: 2.4× torch's items/s"]

    monkeypatch.setattr(html_format, "Constraints", lambda **constraints: None)
    monkeypatch.setattr(html_format, "recommend", lambda runs, constraints: Recommendation())
    page = html_report([encoder_run()])
    section = page[page.index('id="recommendation"'):page.index('id="charts"')]
    assert "Use onnxruntime int8 &lt;fast&gt;" in section
    assert "<li>reproduce: <code>enginebench run --engine onnxruntime --precision int8</code></li>" in section


def test_each_model_gets_the_real_recommenders_verdict():
    page = html_report([encoder_run(), decoder_run()])
    section = page[page.index('id="recommendation"'):page.index('id="charts"')]
    # minilm's latency and throughput questions, smollm2-135m's tg16
    assert section.count("<li>recommend: ") == 3
    assert "<li>recommend: minilm · workload titles · objective latency: median" in section
    assert "<li>best: openvino · fp32 · throughput scenario · batch 8" in section
    assert "<li>best: llamacpp · fp32 · generate scenario" in section
    assert "<li>reproduce: <code>enginebench run --model minilm --engine openvino" in section


def test_a_recommendation_that_cannot_be_made_says_why(monkeypatch):
    def refuse(runs, constraints):
        raise UsageError("no result meets the constraints")

    monkeypatch.setattr(html_format, "Constraints", lambda **constraints: None)
    monkeypatch.setattr(html_format, "recommend", refuse)
    assert "No recommendation for minilm · titles · latency: no result meets the constraints" in html_report(
        [encoder_run()])


def test_a_run_over_two_workloads_gets_an_answer_per_workload_and_objective():

    section = html_report([two_workload_run()])
    section = section[section.index('id="recommendation"'):section.index('id="charts"')]
    assert "several workloads" not in section
    heads = re.findall(r"<li>recommend: minilm · workload (\w+) · objective (\w+)", section)
    assert heads == [("titles", "latency"), ("titles", "throughput"),
                                                      ("corpus", "latency"), ("corpus", "throughput")]
    assert section.count("<li>best: ") == 4


def test_the_report_command_writes_the_newest_run_by_default(stored, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert report_cli()("report", "--html", str(out), "--db", str(stored)) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out} (run dec1)"
    assert "tg16" in out.read_text()
    assert report_cli()("report", "enc1", "dec1", "--html", str(out), "--db", str(stored)) == 0
    assert "run enc1, run dec1" in out.read_text()


def test_the_report_command_says_what_is_wrong_in_one_line(stored, tmp_path):
    with pytest.raises(UsageError, match="no run 'x'"):
        report_cli()("report", "x", "--html", str(tmp_path / "r.html"), "--db", str(stored))
    with pytest.raises(UsageError, match="cannot write"):
        write_html_report([encoder_run()], str(tmp_path / "missing" / "r.html"))
    with pytest.raises(UsageError, match="--html"):
        report_cli()("report", "--db", str(stored))


def test_when_every_result_is_noisy_the_report_also_judges_them_with_their_warnings():
    from dataclasses import replace

    run = encoder_run()
    run.results = [replace(r, verdict={"ok": False, "reasons": ["CV 40% > 10%"]}) if r.status == "ok" else r
                   for r in run.results]
    section = html_report([run])
    section = section[section.index('id="recommendation"'):section.index('id="charts"')]
    assert "<li>no recommendation: " in section
    assert "Judging the results with warnings too" in section and "<li>best: openvino" in section


def test_results_measured_on_ray_nodes_are_grouped_by_machine():
    run = encoder_run(run_id="ray1")
    nodes = [{"hostname": "node-a", "cpu": "Xeon <b>8480C</b>", "logical_cores": 8, "ray_node_id": "aaaa1111bbbb"},
             {"hostname": "node-b", "cpu": "EPYC 9654", "logical_cores": 16, "ray_node_id": "cccc2222dddd"}]
    for i, r in enumerate(run.results):
        r.details = {**r.details, "node": nodes[i % 2]}
    page = html_report([run])
    headings = re.findall(r"<h4>measured on (.*?)</h4>", page)
    assert len(headings) == 2 and headings[0].startswith("node-a") and headings[1].startswith("node-b")
    assert "Xeon &lt;b&gt;8480C&lt;/b&gt;" in headings[0] and "<b>8480C" not in page
    counts = {label: n for label, n in re.findall(r"<li>(node-\w .*?): (\d+) results</li>", page)}
    assert sorted(int(n) for n in counts.values()) == sorted(
        [len(run.results[0::2]), len(run.results[1::2])])
