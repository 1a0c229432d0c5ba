"""Tables at 80 columns and in pipes: folded into parts that repeat the key columns, never cut to "…"."""

from __future__ import annotations

import io

from rich.console import Console

from enginebench.results.terminal import column_groups, print_table

HEADERS = ["engine", "scenario", "median (ms)", "p99 (ms)", "items/s", "tokens/s", "load (s)", "peak RSS (MB)",
           "fidelity (min cos)", "verdict"]
ROWS = [["onnxruntime", "throughput", "8.18 ± 0.073", "12.3", "238 ± 6.8", "3,216", "0.36", "391", "1.000000 ok",
         "warn (11)"],
        ["torch", "latency", "23.2 ± 0.74", "27.3", "43.8 ± 0.88", "5,506", "3.10", "511", "reference", "ok"]]


def _render(width: int) -> str:
    out = io.StringIO()
    print_table(Console(file=out, width=width, color_system=None), "run x", HEADERS, ROWS, keys=2,
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
