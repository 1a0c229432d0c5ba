"""Tables at 80 columns and in pipes: folded into parts that repeat the key columns, never cut to "…"."""

from __future__ import annotations

import io

from rich.console import Console

from enginebench.formats.terminal import column_groups, print_table

HEADERS = ["engine", "scenario", "median (ms)", "p99 (ms)", "items/s", "tokens/s", "load (s)", "peak RSS (MB)",
           "fidelity (min cos)", "verdict"]
ROWS = [["onnxruntime", "throughput", "8.18 ± 0.073", "12.3", "238 ± 6.8", "3,216", "0.36", "391", "1.000000 ok",
         "warn (11)"],
        ["torch", "latency", "23.2 ± 0.74", "27.3", "43.8 ± 0.88", "5,506", "3.10", "511", "reference", "ok"]]


def _render(width: int) -> str:
    out = io.StringIO()
    print_table(Console(file=out, width=width, force_terminal=True, color_system=None), "run x", HEADERS, ROWS, keys=2,
                left={"engine", "scenario"})
    return out.getvalue()


def test_a_wide_table_folds_at_80_columns_and_keeps_every_value():
    text = _render(80)
    assert "…" not in text.replace("… continued", "")
    assert all(len(line) <= 80 for line in text.splitlines())
    for row in ROWS:
        for cell in row:
            assert cell in text
    assert text.count("onnxruntime") >= 2  # the key columns repeat in every fold


def test_a_table_that_fits_is_one_table():
    text = _render(300)
    assert "continued" not in text and text.count("onnxruntime") == 1


def test_column_groups_fit_the_width():
    widths = [10, 10, 12, 8, 10, 8, 8, 13, 18, 9]
    for available in (60, 80, 120):
        for group in column_groups(widths, 2, available):
            assert 1 + sum(w + 3 for w in widths[:2] + [widths[i] for i in group]) <= available or len(group) == 1


# -- the real renderers: a run's tables, the feature table, graph tables, `enginebench runs` ---------------

import re  # noqa: E402

import pytest  # noqa: E402
from helpers.sample_run import sample_run  # noqa: E402

from enginebench.formats.console import render  # noqa: E402
from enginebench.formats.terminal import header_lines, markdown_table  # noqa: E402


def _screen(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


def _cells(text: str) -> list[str]:
    """Every cell's text in rich's box-drawn rows (one line of each cell)."""
    return [c.strip() for line in text.splitlines() if line.startswith("│") for c in line.strip("│").split("│")]


def _assert_whole(text: str, width: int, values: list[str]):
    """No line wider than the terminal, no cell cut to "…", and every value present: whole on one line, or (a
    cell wrapped at spaces) every word of it whole in the output. A single word wider than half the terminal
    may be folded: there is no other way to show it."""
    assert all(len(line) <= width for line in text.splitlines()), "a line is wider than the terminal"
    assert not any("…" in c for c in _cells(text)), "a cell was cut"
    words = set(re.split(r"[\s│]+", text))
    for value in values:
        assert value in text or all(w in words for w in value.split() if len(w) <= width // 2), value


def _figures(run) -> list[str]:
    from enginebench.formats.tables import decoder, encoder

    return [c for row in encoder.section(run).rows + decoder.decoder_table(run)[1] for c in row]


@pytest.mark.parametrize("width", [80, 60])
def test_a_runs_tables_keep_every_figure_on_a_narrow_terminal(width):
    run = sample_run()
    console, out = _screen(width)
    render(run, console)
    text = out.getvalue()
    _assert_whole(text, width, _figures(run))
    assert "VPDPBUSD saturates: [see docs]" in " ".join(text.split())  # notes: text, not markup
    assert "machine: Intel(R) Xeon(R) Platinum 8480C" in text


def test_off_a_terminal_a_run_is_its_markdown_with_notes_and_machine():
    from enginebench.formats.md import to_markdown

    run = sample_run()
    out = io.StringIO()
    render(run, Console(file=out, width=80))  # a file: not a terminal
    text = out.getvalue()
    assert text == to_markdown(run)
    assert "│" not in text and "…" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for value in _figures(run):
        assert any(value.replace("|", "\\|") in row for row in rows), value


def test_print_table_off_a_terminal_prints_markdown_whole():
    out = io.StringIO()
    print_table(Console(file=out, width=40), "run x", HEADERS, ROWS, keys=2)
    text = out.getvalue()
    assert text.startswith("run x\n\n| engine | scenario | median (ms) |")
    assert text.count("\n| onnxruntime | throughput | 8.18 ± 0.073 | 12.3 |") == 1


def test_markdown_cells_escape_pipes_and_line_breaks():
    table = markdown_table(["a", "b"], [["x | y", "one\ntwo"]])
    assert table.splitlines()[2] == "| x \\| y | one two |"


def test_cell_text_is_never_read_as_markup():
    console, out = _screen(120)
    print_table(console, "t [bold]", ["engine", "install"], [["x", "pip install 'enginebench[torch]'"]], keys=1)
    assert "'enginebench[torch]'" in out.getvalue() and "t [bold]" in out.getvalue()


def test_headers_wrap_at_spaces_to_the_cells_width():
    assert header_lines("peak RSS (MB)", 3) == "peak\nRSS\n(MB)"
    assert header_lines("workers×threads", 3) == "workers×\nthreads"
    assert header_lines("median (ms)", 11) == "median (ms)"


@pytest.mark.parametrize("width", [80, 60])
def test_feature_table_keeps_every_value(width):
    from enginebench.engines.base import EngineInfo
    from enginebench.formats.tables.features import _rows, render_feature_table

    infos = [EngineInfo(name="llamacpp", library="llama_cpp", version="0.3.36", install="pip install 'enginebench[llamacpp]'",
                        precisions=("fp32", "fp16", "q8_0", "q6_k", "q4_k_m", "q4_0", "q3_k_m", "q2_k", "native"),
                        devices=("cpu",), formats=("gguf",), notes=""),
             EngineInfo(name="sentence-transformers", library="sentence_transformers", version=None,
                        install="pip install 'enginebench[sentence-transformers]'", precisions=("fp32",),
                        devices=(), formats=("safetensors", "sentence-transformers folder"), notes="")]
    console, out = _screen(width)
    render_feature_table(infos, console)
    _assert_whole(out.getvalue(), width, [c for i in infos for row in _rows(i) for c in row])


@pytest.mark.parametrize("width", [80, 60])
def test_block_table_keeps_every_value(width):
    from enginebench.formats.tables.graph import breakdown_rows, render_breakdown
    from enginebench.measure.stats import Summary
    from enginebench.models.onnx_graph import Block
    from enginebench.scenarios.blocks import Breakdown, EngineBlocks

    def summary(ms):
        return Summary(30, ms * 1e6, ms * 1e6, 0, 0, 0, 0, 0, (ms * 0.98e6, ms * 1.02e6), 0)

    blocks = [Block(name=f"encoder.layer.{i}", nodes=40, inputs=("x",), outputs=("y",)) for i in range(3)]
    engines = [EngineBlocks(e, [summary(1.5 + i) for i in range(3)], summary(7.0)) for e in ("onnxruntime", "openvino")]
    bd = Breakdown(blocks, engines + [EngineBlocks("tinygrad", error="does not load ONNX")], 8, 128)
    console, out = _screen(width)
    render_breakdown(bd, console)
    headers, rows = breakdown_rows(bd)
    _assert_whole(out.getvalue(), width, [c for row in rows for c in row if c])
    assert "tinygrad: not measured: does not load ONNX" in out.getvalue()


def test_a_real_pipe_gets_markdown(tmp_path):
    import subprocess
    import sys

    from enginebench.store.database import ResultStore

    run = sample_run()
    db = tmp_path / "p.db"
    with ResultStore(db) as store:
        store.add_run(run)
        for i, r in enumerate(run.results):
            store.add_result(run.run_id, r, cell=i)
    p = subprocess.run([sys.executable, "-m", "enginebench", "show", "--db", str(db)], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "COLUMNS": "60"}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r"^\| # \| engine \|", p.stdout, re.M)  # the row numbers the notes name rows by ([1] ...)
    assert "| torch |" in p.stdout and p.stdout.strip().splitlines()[-1].startswith("machine: ")
