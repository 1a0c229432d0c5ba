"""`enginebench compare RUN_A RUN_B` on runs stored in a tmp database: the table, JSON, the regression gate's exit
code and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.compared_runs import CONFIG, MACHINE, broken_runs, make_result
from rich.console import Console

import enginebench
from enginebench.analysis.compare import compare_runs
from enginebench.formats.tables.comparison import render
from enginebench.store.database import ResultStore
from enginebench.store.model import Run


def cli(argv: list[str]) -> int:
    """The command line as `enginebench` runs it (a parser of this module alone until it is registered)."""
    from enginebench import cli as package

    if "compare" in package.GROUPS:
        return package.main(argv)
    from enginebench.cli import compare
    from enginebench.cli.args import Parser
    from enginebench.errors import UsageError

    parser = Parser(prog="enginebench")
    compare.add_parsers(parser.add_subparsers(dest="command", parser_class=Parser))
    try:
        args = parser.parse_args(argv)
        return compare.COMMANDS[args.command](args)
    except UsageError as e:
        print(f"enginebench: error: {e}", file=sys.stderr)
        return UsageError.exit_code


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Three runs: `base`; `same`, measured again with the same code; `slow`, its batch-8 cell 20% slower,
    an engine gone and another added, on another CPU with another onnxruntime and one process per cell."""
    path = tmp_path_factory.mktemp("compare") / "runs.db"
    runs = [
        Run("base", "2026-01-01T00:00:00+00:00", MACHINE, CONFIG,
            [make_result(seed=1), make_result(batch=8, seed=2), make_result(engine="openvino", seed=3),
             make_result(scenario="throughput", workers=2, threads=1, batch=8, seed=4)]),
        Run("same", "2026-01-02T00:00:00+00:00", MACHINE, CONFIG,
            [make_result(seed=11), make_result(batch=8, seed=12), make_result(engine="openvino", seed=13),
             make_result(scenario="throughput", workers=2, threads=1, batch=8, seed=14)]),
        Run("slow", "2026-01-03T00:00:00+00:00",
            {**MACHINE, "cpu": "AMD EPYC 9654", "libraries": {"onnxruntime": "1.2", "numpy": "2.0"}},
            {**CONFIG, "repeat": 1},
            [make_result(seed=21, processes=1, version="1.2"),
             make_result(batch=8, seed=22, scale=1.2, processes=1, version="1.2"),
             make_result(engine="torch", seed=23, processes=1, version="2.5")]),
    ]
    with ResultStore(path) as store:
        for run in runs:
            store.add_run(run)
            for i, r in enumerate(run.results):
                store.add_result(run.run_id, r, cell=i)
    return str(path)


def test_a_run_measured_again_passes_the_gate(db, capsys):
    assert cli(["compare", "base", "same", "--db", db, "--fail-on", "regression"]) == 0
    out = capsys.readouterr().out
    assert ("no cell is slower by more than 5% with 95% confidence, and the new run vouches for every cell the "
            "base measured") in out
    assert "Holm's correction over 4 cells" in out
    assert "THE RUNS DIFFER" not in out and "The runs differ" not in out
    assert "ms →" in out or " → " in out  # base → new with units
    assert "items/s" in out


def test_a_slower_cell_fails_the_gate_and_is_named(db, capsys):
    assert cli(["compare", "base", "slow", "--db", db, "--fail-on", "regression"]) == 1
    out = capsys.readouterr().out
    assert "1 cell slower by more than 5% with 95% confidence: onnxruntime fp32 latency titles b8" in out
    assert "slower" in out and "SLOWER" in out
    assert "2 cells missing from the new run: openvino fp32 latency titles b1 1×2, onnxruntime fp32 throughput" in out
    # without --fail-on the comparison is only reported; a threshold above the slowdown and allowing the cells
    # gone from the new run let it pass, either alone does not
    assert cli(["compare", "base", "slow", "--db", db]) == 0
    assert cli(["compare", "base", "slow", "--db", db, "--threshold", "50%", "--fail-on", "regression"]) == 1
    assert cli(["compare", "base", "slow", "--db", db, "--allow", "missing", "--fail-on", "regression"]) == 1
    assert cli(["compare", "base", "slow", "--db", db, "--threshold", "50%", "--fail-on", "regression",
                "--allow", "missing"]) == 0
    assert "but those allowed (2 missing)" in capsys.readouterr().out


def test_differences_cells_in_one_run_and_one_process_are_said(db, capsys):
    cli(["compare", "base", "slow", "--db", db])
    out = capsys.readouterr().out
    head = out[:out.index("|")]  # before the table
    assert "CPU: Intel Xeon 8480 → AMD EPYC 9654" in head
    assert "onnxruntime: 1.0 → 1.2" in head and "engine onnxruntime: 1.0 → 1.2" in head
    assert "processes per cell (--repeat): 3 → 1" in head
    # the cells base measured that slow lacks come before the table, each with its kind and reason
    assert "MISSING openvino fp32 latency titles b1 1×2: measured in base, absent from new (slow)" in head
    assert "MISSING onnxruntime fp32 throughput titles b8 2×1: measured in base, absent from new (slow)" in head
    assert "only in base" not in out  # said once
    assert "only in new (slow): torch fp32 latency titles b1 1×2" in out
    assert "new (slow): one process per cell: its CIs cover within-process variance only" in out


def test_json_carries_every_cell_and_the_regressions(db, capsys):
    assert cli(["compare", "base", "slow", "--db", db, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["base"] == "base" and d["new"] == "slow" and d["threshold"] == 0.05
    assert [c["cell"]["batch_size"] for c in d["cells"]] == [1, 8]
    slow = d["cells"][1]
    assert slow["verdict"] == "slower" and slow["speedup"]["ci95"][1] < 1 / 1.05
    assert slow["ratio"]["value"] == pytest.approx(slow["new"] / slow["base"])
    assert d["regressions"] == [slow["cell"]]
    assert any("one process" in r for r in slow["reasons"])
    assert {c["engine"] for c in d["only_in_base"]} == {"openvino", "onnxruntime"}
    assert d["machine_differences"] == ["CPU: Intel Xeon 8480 → AMD EPYC 9654"]


def test_markdown_and_the_same_run_twice(db, capsys):
    assert cli(["compare", "base", "base", "--db", db, "--format", "md", "--fail-on", "regression"]) == 0
    out = capsys.readouterr().out
    assert "| # | engine |" in out and "1.00× [" in out and "no change" in out


@pytest.mark.parametrize("argv, message", [
    (["compare", "base", "nope"], "no run 'nope'"),
    (["compare", "base", "same", "--threshold", "5"], "--threshold '5' is not a percentage"),
    (["compare", "base", "same", "--threshold=-5%"], "must be 0% or more"),
    (["compare", "base", "same", "--threshold", "five%"], "is not a percentage"),
    (["compare", "base", "same", "--fail-on", "everything"], "invalid choice"),
    (["compare", "base", "same", "--allow", "missing,slower"],
     "--allow slower: not a kind of cell the gate fails on; give a comma list of missing, failed, skipped, "
     "fidelity, no-ci"),
    (["compare", "base", "nope", "--allow", "everything"], "--allow everything"),  # before the runs are read
    (["compare", "base", "same", "--correction", "bonferroni"], "invalid choice"),
    (["compare", "base"], "required"),
])
def test_bad_input_is_a_one_line_usage_error(db, capsys, argv, message):
    assert cli(argv + ["--db", db]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_missing_database_is_a_usage_error(tmp_path, capsys):
    assert cli(["compare", "a", "b", "--db", str(tmp_path / "none.db")]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()  # and none was created


def enginebench_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed command as a user runs it, on this checkout's sources, in a pipe at 80 columns."""
    src = str(Path(enginebench.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
           "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "enginebench", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.mark.slow
@pytest.mark.serial  # the two runs' drift must stay within the noise floor: not beside another worker
def test_a_a_two_runs_of_one_configuration_back_to_back_change_nothing(tmp_path):
    """The A/A figure: onnxruntime on MiniLM measured twice with the same options, one run after the other, then
    compared through the gate: every cell "no significant change", nothing the new run cannot vouch for, exit 0.
    The machine's drift between the runs is what the noise floor (5%) and the processes' spread are for."""
    db = str(tmp_path / "aa.db")

    def a_a_pair():
        ids = []
        for _ in range(2):
            run = enginebench_cli("run", "--engine", "onnxruntime", "--quick", "--workload", "titles", "--scenario",
                                  "latency,throughput", "--duration", "1s", "--repeat", "3", "--db", db, "--json")
            assert run.returncode == 0, run.stderr
            stored = json.loads(run.stdout)
            assert [r["status"] for r in stored["results"]] == ["ok", "ok"], stored["results"]
            ids.append(stored["run_id"])
        return ids, enginebench_cli("compare", *ids, "--db", db, "--fail-on", "regression", "--format", "json")

    ids, cmp = a_a_pair()
    called = [c for c in json.loads(cmp.stdout)["cells"] if c["verdict"] != "no significant change"]
    if called:
        # A shared host can change speed by a third between two runs 20 s apart, either way (seen in three
        # suites: 3.2 -> 4.2 ms slower, a throughput cell 22% "faster" while the GEMM probes beside it
        # went from 130 to 167 GFLOP/s). Such a move is real, and the runs' own warnings or compare's reading of
        # the GEMM probes say the machine moved; the pair is then measured again, once. A change called while
        # nothing says the machine moved is the tool's.
        said = [w for c in called for w in c["warnings"].get("base", []) + c["warnings"].get("new", [])]
        moved = [c for c in called if c["machine"] and (c["machine"]["moved"] or c["machine"]["unsteady"])]
        assert moved or any("machine's state changed" in w or w.startswith("drift:") for w in said), cmp.stdout
        ids, cmp = a_a_pair()
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    d = json.loads(cmp.stdout)
    assert [c["verdict"] for c in d["cells"]] == ["no significant change"] * 2, [c["reasons"] for c in d["cells"]]
    assert d["gate"] == {"fails": False, "allow": [], "issues": [], "slower": []}
    assert d["correction"]["method"] == "holm" and d["correction"]["cells"] == 2
    assert all(c["processes"] == [3, 3] for c in d["cells"])
    table = enginebench_cli("compare", *ids, "--db", db, "--fail-on", "regression")  # in a pipe: Markdown
    assert table.returncode == 0 and "…" not in table.stdout
    assert "Holm's correction over 2 cells" in table.stdout and "the new run vouches for every cell" in table.stdout


@pytest.fixture(scope="module")
def broken_db(tmp_path_factory):
    """test_compare.broken_runs: new lost, crashed, skipped, lost fidelity on and cannot put a CI on a cell each."""
    path = tmp_path_factory.mktemp("gate") / "runs.db"
    with ResultStore(path) as store:
        for run in broken_runs():
            store.add_run(run)
            for i, r in enumerate(run.results):
                store.add_result(run.run_id, r, cell=i)
    return str(path)


def test_the_gate_fails_on_a_broken_run_and_lists_its_cells_first(broken_db, capsys):
    assert cli(["compare", "a", "b", "--db", broken_db, "--fail-on", "regression", "--format", "md"]) == 1
    out = capsys.readouterr().out
    head = out[:out.index("| # |")]  # before the table
    assert "5 cells the base measured that the new run cannot vouch for (5 fail --fail-on regression" in head
    order = [head.index(line) for line in (
        "- FAILED torch fp32 latency titles b1 1×2: new failed: child exited with signal 11",
        "- SKIPPED openvino fp32 latency titles b1 1×2: new skipped: fp32 unsupported here",
        "- MISSING tinygrad fp32 latency titles b1 1×2: measured in base, absent from new (b)",
        "- FIDELITY [2] ctranslate2 fp32 latency titles b1 1×2: fidelity ok in base",
        "- NO-CI [3] jax fp32 latency titles b1 1×2: no confidence interval")]
    assert order == sorted(order)
    assert "not compared: tvm fp32 latency titles b1 1×2: base failed: boom" in out  # no regression: base failed
    # each kind alone keeps the gate shut; all of them allowed open it, the cells still listed
    for kind in ("missing", "failed", "skipped", "fidelity", "no-ci"):
        others = ",".join(k for k in ("missing", "failed", "skipped", "fidelity", "no-ci") if k != kind)
        assert cli(["compare", "a", "b", "--db", broken_db, "--fail-on", "regression", "--allow", others]) == 1, kind
    capsys.readouterr()
    assert cli(["compare", "a", "b", "--db", broken_db, "--fail-on", "regression",
                "--allow", "missing, failed,skipped,fidelity,no-ci"]) == 0
    out = capsys.readouterr().out
    assert "(all allowed by --allow;" in out and "(allowed: --allow no-ci)" in out
    assert "but those allowed (1 missing, 1 failed, 1 skipped, 1 fidelity, 1 no-ci)" in out


def test_on_an_80_column_screen_nothing_is_cut(broken_db):
    with ResultStore(broken_db) as store:
        cmp = compare_runs(store.load_run("a"), store.load_run("b"), allow={"skipped"})
    console = Console(width=80, force_terminal=True, color_system=None, record=True)
    render(cmp, console)
    text = console.export_text()
    assert "…" not in text.replace("… continued", "")
    assert text.index("FAILED torch") < text.index("┏") and "(allowed: --allow skipped)" in text.replace("\n", " ")
