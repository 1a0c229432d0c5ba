"""Output formats are plug-ins: `show --format` and `compare --format` offer what formats/REGISTRY holds, a
binary or folder format without --output is one line and exit 2, and `show --format html|png --output` writes
what `report --html` and `plot --output` write."""

from __future__ import annotations

import sys
import types
from typing import ClassVar

import pytest
from helpers.sample_run import stored_sample_run

from enginebench import formats
from enginebench.cli import main
from enginebench.formats.base import COMPARISON, RUNS, Format


def test_the_commands_offer_the_registry_by_what_each_format_renders():
    runs, comparison = formats.format_names(RUNS), formats.format_names(COMPARISON)
    assert runs[:5] == ["table", "json", "csv", "md", "parquet"] and {"html", "png"} <= set(runs)
    assert {"table", "json", "md"} <= set(comparison) and not {"csv", "parquet", "html", "png"} & set(comparison)
    for name in formats.REGISTRY:
        cls = formats.format_class(name)
        assert cls.name == name and cls.renders and cls.help
        assert cls.suffix.startswith(".") or cls.folder  # a file format says its suffix


def test_a_registered_format_is_one_line_away(tmp_path, capsys, monkeypatch):
    class Upper(Format):
        name = "upper"
        help = "the run id, loudly"
        renders: ClassVar[frozenset[str]] = frozenset({RUNS})
        suffix = ".txt"

        def text(self, subject):
            return subject[0].run_id.upper() + "\n"

    module = types.ModuleType("upper_format")
    module.Upper = Upper
    monkeypatch.setitem(sys.modules, "upper_format", module)
    db = stored_sample_run(tmp_path)
    assert main(["show", "--db", db, "--format", "upper"]) == 2  # not registered yet
    assert "invalid choice: 'upper'" in capsys.readouterr().err
    monkeypatch.setitem(formats.REGISTRY, "upper", "upper_format:Upper")
    assert main(["show", "--db", db, "--format", "upper"]) == 0
    assert capsys.readouterr().out == "20261125-101500-AB12CD\n"
    assert main(["compare", "a", "b", "--db", db, "--format", "upper"]) == 2  # it renders no comparison
    assert "invalid choice: 'upper'" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, fix", [("parquet", "give --output FILE.parquet"), ("png", "give --output DIR")])
def test_a_file_or_folder_format_without_output_is_one_line_exit_2(tmp_path, capsys, fmt, fix):
    assert main(["show", "--db", str(tmp_path / "none.db"), "--format", fmt]) == 2  # said before the store
    err = capsys.readouterr().err
    assert fix in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_show_writes_html_and_png_as_report_and_plot_do(tmp_path, capsys):
    db = stored_sample_run(tmp_path)
    assert main(["show", "--db", db, "--format", "html", "--output", str(tmp_path / "show.html")]) == 0
    assert main(["report", "--db", db, "--html", str(tmp_path / "report.html")]) == 0
    assert (tmp_path / "show.html").read_text() == (tmp_path / "report.html").read_text()
    capsys.readouterr()
    assert main(["show", "--db", db, "--format", "png", "--output", str(tmp_path / "show")]) == 0
    shown = capsys.readouterr().out.split()
    assert main(["plot", "--db", db, "--output", str(tmp_path / "plot")]) == 0
    plotted = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[1] for p in shown] == [p.rsplit("/", 1)[1] for p in plotted] and shown
    assert all(p.endswith(".png") and (tmp_path / "show" / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in shown)
    # a folder format given a file, a file format given a folder: one line, exit 2
    assert main(["show", "--db", db, "--format", "png", "--output", str(tmp_path / "show.html")]) == 2
    assert main(["show", "--db", db, "--format", "json", "--output", str(tmp_path / "show")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "writes a folder" in err[0] and "writes one file" in err[1]


def test_the_table_format_writes_its_markdown_to_a_file(tmp_path, capsys):
    db = stored_sample_run(tmp_path)
    assert main(["show", "--db", db, "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert main(["show", "--db", db, "--output", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == md and "| torch |" in md


def test_every_table_a_scenario_names_is_drawn_alike_by_every_text_format():
    """formats/tables.SECTIONS draws each of TABLES; console, md and html lay out the same Sections, so a row of
    any table reaches every format (an ops or blocks run once printed `no results` under md)."""
    import io

    from helpers.sample_run import sample_run
    from rich.console import Console

    from enginebench.formats.console import render
    from enginebench.formats.html import html_report
    from enginebench.formats.md import to_markdown
    from enginebench.formats.tables import SECTIONS, sections
    from enginebench.scenarios.base import TABLES
    from enginebench.store.model import Run

    assert list(SECTIONS) == list(TABLES)
    empty = Run("r0", "now", {}, {}, [])
    assert sections(empty) == [] and "**run r0** · no results" in to_markdown(empty)
    run = sample_run()
    drawn = sections(run)
    assert len(drawn) >= 2  # the sample holds encoders and decoders
    screen = io.StringIO()
    render(run, Console(file=screen, width=200, force_terminal=True))
    md, page = to_markdown(run), html_report([run])
    for section in drawn:
        assert f"**run {run.run_id}** · {section.title}" in md
        assert len(section.rows) == len(section.statuses)
        for row in section.rows:
            key = row[section.keys - 1]
            assert key in screen.getvalue() and f"| {key} |" in md.replace("\\|", "|")
            assert f">{key}</td>" in page, key


def test_skipped_cells_are_one_note_per_engine_and_precision_not_a_row_each():
    """`--precision int8,int16` over every engine made a row of dashes per engine offering neither (13 of 21
    rows): each is a note once; a table of skipped cells alone still shows them."""
    import dataclasses

    from helpers.sample_run import sample_run

    from enginebench.formats.tables import encoder
    from enginebench.scenarios.registry import in_table

    run = sample_run()
    results = in_table(run.results, "encoders")
    skipped = [r for r in results if r.status == "skipped"]
    assert skipped and len(skipped) < len(results)
    section = encoder.section(run)
    assert len(section.rows) == len(results) - len(skipped) and "skipped" not in section.statuses
    assert [row[0] for row in section.rows] == [str(i) for i in range(1, len(section.rows) + 1)]  # notes' numbers
    for r in skipped:
        assert f"{r.engine} {r.precision}: skipped (1 cell): {r.error}" in section.notes
    alone = encoder.section(dataclasses.replace(run, results=skipped))
    assert len(alone.rows) == len(skipped) and set(alone.statuses) == {"skipped"}
    # the decoder table alike: a refused cell is its note, the rows are the measured ones
    from enginebench.formats.tables import decoder

    first = next(r for r in run.results if decoder.is_decoder_result(r))
    refused = dataclasses.replace(first, engine="jax", status="skipped", error="needs ~30 GiB, 24 GiB here")
    with_refused = dataclasses.replace(run, results=[*run.results, refused])
    assert decoder.section(with_refused).rows == decoder.section(run).rows
    assert f"jax {first.precision}: skipped (1 cell): needs ~30 GiB, 24 GiB here" in decoder.section(with_refused).notes
