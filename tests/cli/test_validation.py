"""`run`'s modes and validation: --quick or the full defaults (never a silent switch), --repeat, durations with
units, --load-timeout, engine option values, precisions, corpus text, a GGUF model's native precision, and
decoder tests that do not fit stored as skipped cells."""

import json
import re
import sqlite3
from pathlib import Path

import pytest

from helpers.cli import enginebench, enginebench_here
from helpers.fake_engines import CLI_PLUGINS, FAKE_TORCH

ROOT = Path(__file__).parents[2]


def stored(db: Path) -> tuple[int, int]:
    """(runs, results) in the database; (0, 0) when it was never created."""
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(db)
    try:
        return tuple(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "results"))
    finally:
        conn.close()


def plan_for(*argv):
    from enginebench.cli import build_parser
    from enginebench.config import RunConfig
    from enginebench.planning import plan_from_config

    config = RunConfig.from_cli(build_parser().parse_args(["run", *argv]))
    return plan_from_config(config), config.quick


def assert_usage_error(tmp_path, args, *fragments):
    """`run ARGS` is refused with one line, exit 2, before anything is measured. Through `main` in this process
    (a child's start-up costs ~2 s a case); tests/cli/test_cli.py runs a usage error in a real child process."""
    db = tmp_path / "bad.db"
    p = enginebench_here("run", *args, "--db", str(db))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (args, p.returncode, p.stderr)
    assert lines[0].startswith("enginebench: error: ") and "Traceback" not in p.stderr
    for fragment in fragments:
        assert fragment in lines[0], (args, lines[0])
    assert stored(db) == (0, 0), args  # nothing ran, nothing was measured


# -- --quick, the full defaults, --repeat ------------------------------------------------------------

def test_without_quick_run_uses_the_full_defaults_whatever_else_is_given():
    from enginebench.measure.timing import StoppingRule

    for argv in ([], ["--seed", "3"], ["--timeout", "5m"], ["-o", "onnxruntime.graph_optimization=basic"]):
        plan, quick = plan_for(*argv)
        assert not quick and plan.repeat == 3, argv
        assert plan.rule == StoppingRule(duration_s=10.0, min_samples=10, warmup_s=1.0), argv
        assert {c.batch_size for c in plan.cells} == {1, 16, 32, 64}, argv


def test_quick_is_the_short_suite_and_explicit_options_override_it():
    from enginebench.engines import engine_class, installed_engines
    from enginebench.measure.timing import StoppingRule

    plan, quick = plan_for("--quick")
    assert quick and plan.repeat == 1 and plan.rule == StoppingRule(duration_s=1.0, min_samples=5, warmup_s=0.3)
    encoders = {e for e in installed_engines() if "encoder" in engine_class(e).model_kinds}
    assert {c.engine for c in plan.cells} == encoders
    assert {(c.workload, c.scenario, c.batch_size) for c in plan.cells} == {
        (w, s, 1) for w in ("corpus", "titles") for s in ("latency", "throughput")}
    plan, _ = plan_for("--quick", "--duration", "3s", "--min-samples", "7", "--batch-size", "2", "--repeat", "2")
    assert plan.rule == StoppingRule(duration_s=3.0, min_samples=7, warmup_s=0.3) and plan.repeat == 2
    assert {c.batch_size for c in plan.cells} == {2}


def test_make_bench_runs_the_quick_suite():
    bench = re.search(r"^bench:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert bench and "enginebench run --quick" in bench.group(1)


@pytest.mark.slow
def test_quick_run_records_its_rule_and_repeat_and_the_title_says_them(tmp_path):
    db = tmp_path / "q.db"
    p = enginebench("run", "--quick", "--engine", "fake-wrong", "--workload", "titles", "--scenario", "latency",
                    "--duration", "200ms", "--repeat", "1", "--load-timeout", "2m", "--db", str(db), "--json",
                    plugins=f"{CLI_PLUGINS},{FAKE_TORCH}")  # a fake torch checks fake-wrong: no real engine loads
    assert p.returncode == 0, p.stderr
    config = json.loads(p.stdout)["config"]
    assert config["stopping_rule"]["duration_s"] == 0.2 and config["stopping_rule"]["min_samples"] == 5
    assert config["stopping_rule"]["warmup_s"] == 0.3
    assert config["repeat"] == 1 and config["load_timeout_s"] == 120 and config["quick"] is True
    assert {r["batch_size"] for r in json.loads(p.stdout)["results"]} == {1}
    table = " ".join(enginebench("show", "--db", str(db)).stdout.split())  # the title may wrap
    assert "cells ≥0.2 s & ≥5 calls after 0.3 s warm-up · 1 process per cell" in table


def test_repeat_sets_the_plan_and_must_be_a_positive_whole_number(tmp_path):
    assert plan_for("--repeat", "4")[0].repeat == 4
    for bad in ("0", "two", "-1"):
        assert_usage_error(tmp_path, ["--engine", "fake-wrong", "--repeat", bad], "--repeat")


# -- durations ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1.5h", 5400), ("10", 10),
                                           ("0.25", 0.25), ("3 s", 3), ("1e3ms", 1)])
def test_durations_take_units(text, expected):
    from enginebench.config import seconds

    assert seconds("--duration", text) == pytest.approx(expected)


def test_durations_and_load_timeout_reach_the_plan():
    plan, _ = plan_for("--duration", "1.5m", "--warmup", "0", "--timeout", "90s", "--load-timeout", "1h")
    assert (plan.rule.duration_s, plan.rule.warmup_s, plan.timeout_s, plan.load_timeout_s) == (90, 0, 90, 3600)
    assert plan_for()[0].load_timeout_s == 1800


@pytest.mark.parametrize("option, value", [
    ("--duration", "10 parsecs"), ("--duration", "-1s"), ("--duration", "nan"), ("--duration", "inf"),
    ("--duration", "0"), ("--warmup", "-0.5"), ("--warmup", "1 fortnight"), ("--timeout", "0s"),
    ("--timeout", "soon"), ("--load-timeout", "0"), ("--load-timeout", "-5m"), ("--load-timeout", "1e999h"),
])
def test_bad_durations_are_one_line_errors_with_an_example(tmp_path, option, value):
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", option, value], option, "e.g.")


# -- engine options, precisions ----------------------------------------------------------------------

@pytest.mark.parametrize("option, fragments", [
    ("onnxruntime.graph_optimization=bogus", ["disable, basic, extended, all", "'bogus'"]),
    ("openvino.hint=FAST", ["LATENCY, THROUGHPUT"]),
    ("openvino.num_streams=-2", ["at least 0"]),
    ("torch.attention=flash", ["sdpa, eager"]),
    ("torch-compile.mode=turbo", ["default, max-autotune-no-cudagraphs"]),
    ("llamacpp.n_ctx=0", ["llamacpp.n_ctx", "at least 1"]),
    ("ctranslate2.inter_threads=two", ["ctranslate2.inter_threads", "whole number"]),
    ("onnxruntime.inter_op_threads=0", ["at least 1"]),
    ("tinygrad.jit=maybe", ["true or false"]),
])
def test_engine_option_values_are_checked_before_anything_runs(tmp_path, option, fragments):
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", "-o", option], "--option", *fragments)


def test_option_choices_are_case_insensitive_and_kept_as_the_library_spells_them():
    from enginebench.engines import engine_class

    assert engine_class("openvino").make_options(2, {"hint": "throughput"}).hint == "THROUGHPUT"
    assert engine_class("onnxruntime").make_options(2, {"graph_optimization": "Basic"}).graph_optimization == "basic"
    assert engine_class("llamacpp").make_options(2, {"n_ctx": "512"}).n_ctx == 512


def test_unknown_precision_names_the_known_ones(tmp_path):
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", "--precision", "fp32,int3"],
                       "'int3'", "fp32", "bf16", "int8", "q4_k_m", "native")


# -- corpus text -------------------------------------------------------------------------------------

def test_corpus_text_that_is_not_a_string_names_the_file_and_row(tmp_path):
    number = tmp_path / "number.jsonl"
    number.write_text('{"text": "a fine document"}\n{"text": 5}\n')
    null = tmp_path / "null.jsonl"
    null.write_text('{"text": null}\n')
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", "--corpus", str(number)], str(number), "line 2")
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", "--corpus", str(null)], str(null), "line 1", "null")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [3, 4]}), ints)
    assert_usage_error(tmp_path, ["--engine", "fake-wrong", "--corpus", str(ints)], str(ints), "row 0")


# -- decoders: a GGUF model's own precision, tests that do not fit -----------------------------------

@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    pytest.importorskip("gguf")
    from helpers.tiny_llama import tiny_llama_spec

    from enginebench.models.gguf_llama import hf_to_gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    hf_to_gguf(Path(tiny_llama_spec().path), path, "f16")
    return path


def test_a_gguf_model_runs_native_by_default_and_others_fp32(tiny_gguf):
    plan, _ = plan_for("--model", str(tiny_gguf), "--engine", "torch,llamacpp", "--prompt-len", "16",
                       "--gen-len", "8")
    assert {c.precision for c in plan.cells} == {"native"}
    plan, _ = plan_for("--model", str(tiny_gguf), "--engine", "llamacpp", "--precision", "fp16", "--prompt-len", "16",
                       "--gen-len", "8")
    assert {c.precision for c in plan.cells} == {"fp16"}
    from helpers.tiny_llama import tiny_llama_spec

    plan, _ = plan_for("--model", tiny_llama_spec().path, "--engine", "torch", "--prompt-len", "16", "--gen-len", "8")
    assert {c.precision for c in plan.cells} == {"fp32"}


def test_decoder_tests_that_do_not_fit_are_planned_as_skips(tmp_path):
    config = tmp_path / "shape.json"
    config.write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "vocab_size": 400, "max_position_embeddings": 300}))
    plan, _ = plan_for("--llm-config", str(config), "--engine", "torch", "--precision", "fp32,bf16",
                       "--batch-size", "1,2", "--prompt-len", "128,512,1024", "--gen-len", "64,400")
    assert {c.workload for c in plan.cells} == {"pp128", "tg64"}
    skipped = {(c.engine, c.precision, c.batch_size, c.workload, c.scenario) for c, _ in plan.skips}
    assert len(plan.skips) == len(skipped) == 2 * 2 * 3  # precisions x batches x (pp512, pp1024, tg400)
    assert skipped == {("torch", p, b, t, "generate") for p in ("fp32", "bf16") for b in (1, 2)
                       for t in ("pp512", "pp1024", "tg400")}
    reasons = {c.workload: reason for c, reason in plan.skips}
    assert all(test in reason and "300 positions" in reason for test, reason in reasons.items())


@pytest.mark.slow
def test_gguf_run_stores_native_results_and_skipped_tests(tiny_gguf, tmp_path):
    pytest.importorskip("llama_cpp")
    db = tmp_path / "g.db"
    p = enginebench("run", "--model", str(tiny_gguf), "--engine", "torch,llamacpp", "--prompt-len", "16,512",
                    "--gen-len", "8", "--duration", "0.2", "--warmup", "0.05", "--repeat", "1", "--json",
                    "--db", str(db))
    assert p.returncode == 0, p.stderr
    by = {(r["engine"], r["workload"]): r for r in json.loads(p.stdout)["results"]}
    assert set(by) == {(e, t) for e in ("torch", "llamacpp") for t in ("pp16", "pp512", "tg8")}
    assert {r["precision"] for r in by.values()} == {"native"}
    assert by[("llamacpp", "pp16")]["status"] == "ok" and by[("llamacpp", "tg8")]["status"] == "ok"
    assert by[("torch", "pp16")]["status"] == "skipped" and "native" in by[("torch", "pp16")]["error"]
    pp512 = by[("llamacpp", "pp512")]
    assert pp512["status"] == "skipped" and "256 positions" in pp512["error"]
    assert stored(db) == (1, 6)
    table = " ".join(enginebench("show", "--db", str(db)).stdout.split())
    assert "native" in table and "cells ≥0.2 s & ≥10 calls after 0.05 s warm-up · 1 process per cell" in table


def test_the_top_level_help_lists_every_command(capsys):
    """Every command's help is an argparse template: a bare `%` broke `enginebench --help`."""
    from enginebench.cli import main as cli_main

    with pytest.raises(SystemExit) as exit_:
        cli_main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "% of" in out and all(c in out for c in ("show", "compare", "report", "ops"))


def test_micro_batch_is_refused_for_a_decoder_before_anything_runs(tmp_path):
    from helpers.tiny_llama import tiny_llama_spec

    assert_usage_error(tmp_path, ["--model", tiny_llama_spec().path, "--engine", "torch", "-o", "torch.micro_batch=4",
                                  "--prompt-len", "16", "--gen-len", "8"],
                       "torch.micro_batch", "decoder", "drop the option")
    plan, _ = plan_for("--engine", "onnxruntime", "-o", "onnxruntime.micro_batch=8")
    assert plan.engine_options == {"onnxruntime": {"micro_batch": "8"}}
