"""The generate scenario on a tiny synthetic Llama: torch decoder KV cache, prompts, timing, CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers.sessions import load_session
from helpers.tiny_llama import TransformersReference, prompt_ids, tiny_llama_spec

from enginebench.cli import main
from enginebench.engines.base import DecoderSession
from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.scenarios.generate import owns_generation_loop, run_generate
from enginebench.workloads.prompts import DecoderTest, build_prompt_sets, corpus_token_rows, decoder_tests

FAST = StoppingRule(duration_s=0.05, min_samples=5, warmup_s=0.0, min_warmup=1)


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama_spec()


@pytest.fixture(scope="module")
def fp32_session(tiny):
    return load_session("torch", tiny, "fp32", threads=1)


def _incremental_logits(session, ids: np.ndarray, prefill_len: int) -> np.ndarray:
    session.reset()
    steps = [session.prefill(ids[:, :prefill_len])]
    for k in range(prefill_len, ids.shape[1]):
        steps.append(session.decode(ids[:, k:k + 1]))
    return np.stack(steps, axis=1)  # logits of positions prefill_len-1 .. n-1


@pytest.mark.engine  # loads a real engine or model: not in `make test-fast`
def test_prefill_then_decode_equals_full_forward(tiny, fp32_session):
    session = fp32_session
    ids = prompt_ids(tiny, batch=2, length=20)
    full = session.forward_logits(ids)
    assert full.shape == (2, 20, session.vocab_size)
    cached = _incremental_logits(session, ids, prefill_len=12)
    np.testing.assert_allclose(cached, full[:, 11:], atol=1e-4 * np.abs(full).max())
    # a reset really forgets: the same again gives the same logits
    np.testing.assert_allclose(_incremental_logits(session, ids, 12), cached, atol=1e-6)


@pytest.mark.engine  # loads a real engine or model: not in `make test-fast`
def test_int8_cache_is_consistent(tiny):
    """Dynamic int8 quantizes activations with a scale per call, so one token at a time cannot equal a full
    forward bit for bit; the cache must still carry the context: the same tokens win almost everywhere."""
    session = load_session("torch", tiny, "int8", threads=1)
    ids = prompt_ids(tiny, batch=2, length=20)
    full = session.forward_logits(ids)[:, 11:]
    cached = _incremental_logits(session, ids, prefill_len=12)
    assert (cached.argmax(-1) == full.argmax(-1)).mean() >= 0.8
    assert np.abs(cached - full).mean() < 0.1 * np.abs(full).mean()
    assert session.executed_precision == "int8"


@pytest.mark.engine  # loads a real engine or model: not in `make test-fast`
def test_fp32_decoder_is_transformers(tiny, fp32_session):
    ids = prompt_ids(tiny, batch=1, length=16, seed=3)
    np.testing.assert_allclose(fp32_session.forward_logits(ids), TransformersReference(tiny).logits(ids), atol=1e-5)


def test_unsupported_decoder_precision_is_skipped_with_reason(tiny):
    from enginebench.engines import engine_class

    torch_engine = engine_class("torch")
    assert torch_engine.why_not(tiny, "bf16") is None
    assert "fp16" in torch_engine.why_not(tiny, "fp16")
    import dataclasses

    huge = dataclasses.replace(tiny, params=10**13)  # 40 TB of fp32: skipped, never loaded into the OOM killer
    assert "GiB available" in torch_engine.why_not(huge, "fp32")


def test_prompts_are_exact_length_and_deterministic(tiny):
    a = corpus_token_rows(tiny.path, rows=3, length=40, seed=5)
    b = corpus_token_rows(tiny.path, rows=3, length=40, seed=5)
    assert a.shape == (3, 40) and a.dtype == np.int64
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, corpus_token_rows(tiny.path, rows=3, length=40, seed=6))
    assert a.min() >= 0 and a.max() < 512
    assert len({tuple(r) for r in a}) == 3  # distinct prompts


def test_tests_respect_max_positions():
    tests, dropped = decoder_tests([128, 512], [128], max_positions=256)
    assert [t.name for t in tests] == ["pp128", "tg128"]
    assert tests[1].prompt_len == 128 and len(dropped) == 1 and "pp512" in dropped[0]
    tests, dropped = decoder_tests([200], [128], max_positions=256)
    assert tests[1].prompt_len == 128 and "not 200" in dropped[0]  # tg clamps its context


@pytest.mark.engine  # loads a real engine or model: not in `make test-fast`
def test_generate_scenario_pp_and_tg(tiny, fp32_session):
    sets = build_prompt_sets(tiny.path, [DecoderTest("pp", 24, 1), DecoderTest("tg", 24, 6)], max_positions=256)
    pp = run_generate(fp32_session, sets["pp24"], batch_size=2, rule=FAST, load_s=0.5)
    assert len(pp.worker_samples[0]) >= 5 and (pp.worker_samples[0] > 0).all()
    assert pp.tokens_per_item == 24 and pp.items_per_call == 2
    assert "ttft_ns" not in pp.details and pp.details["timing"].startswith("prefill")
    assert pp.details["pp_timed_as"] == "prefill" and pp.details["timed_call"].startswith("prefill(): transformers")
    tg = run_generate(fp32_session, sets["tg6"], batch_size=1, rule=FAST, load_s=0.5)
    samples = tg.worker_samples[0]
    generations = tg.details["generations"]
    assert len(samples) == 5 * generations  # gen_len - 1 decode steps per generation, each timed
    assert len(tg.details["ttft_ns"]) == generations and tg.tokens_per_item == 1
    assert tg.details["generation_steps"] == [5] * generations and "pp_timed_as" not in tg.details
    assert tg.details["timed_call"].startswith("decode(): one LlamaForCausalLM forward")
    assert tg.peak_rss_mb > 0 and tg.executed_precision == "fp32"


class _StreamOnly(DecoderSession):
    """An engine owning its generation loop (like CTranslate2): timed through stream()."""

    vocab_size = 10
    details: dict = {}

    def reset(self):
        pass

    def prefill(self, tokens):
        return np.zeros((len(tokens), 10), np.float32)

    def decode(self, tokens):
        raise NotImplementedError

    def stream(self, prompt, new_tokens):
        for _ in range(new_tokens):
            yield np.zeros(len(prompt), np.int64)


def test_engines_with_their_own_loop_are_timed_through_stream(tiny):
    sets = build_prompt_sets(tiny.path, [DecoderTest("tg", 8, 4)], max_positions=256)
    session = _StreamOnly()
    assert owns_generation_loop(session) and not owns_generation_loop(_Plain())
    m = run_generate(session, sets["tg4"], 1, FAST, 0.0)
    assert m.details["timing"].startswith("stream") and len(m.worker_samples[0]) == 3 * m.details["generations"]


class _Plain(_StreamOnly):
    stream = DecoderSession.stream


def test_pp_of_an_engine_owning_its_loop_is_a_ttft(tiny):
    """An engine that cannot prefill without generating is timed through stream(prompt, 1): the sample is a
    time to first token, and the measurement says so, so no prefill tokens/s is derived from it."""
    sets = build_prompt_sets(tiny.path, [DecoderTest("pp", 8, 1)], max_positions=256)
    m = run_generate(_StreamOnly(), sets["pp8"], 1, FAST, 0.0)
    assert m.details["pp_timed_as"] == "ttft" and m.details["timed_call"].startswith("time to first token")
    assert "_StreamOnly.stream()" in m.details["timed_call"]  # an engine that does not describe its call
    direct = run_generate(_Plain(), sets["pp8"], 1, FAST, 0.0)
    assert direct.details["pp_timed_as"] == "prefill"


class _PreparedStream(_StreamOnly):
    """Converts prompts to its own format before the clock and reports host-side work done there."""

    timed_calls = {"stream": "the fake loop"}

    def __init__(self):
        self.streamed = []

    def prepare_prompt(self, prompt):
        return ("prepared", prompt)

    def stream(self, prompt, new_tokens):
        self.streamed.append(prompt)
        import time

        time.sleep(0.002)
        yield from super().stream(prompt[1], new_tokens)

    def host_side(self, tokens, call, repeats):
        assert call == "stream" and tokens.shape == (1, 8)
        return {"what": "conversion", "samples_ns": [1_000_000] * repeats, "inside_timed_call": False}


def test_prepared_prompts_and_host_side_are_recorded(tiny):
    sets = build_prompt_sets(tiny.path, [DecoderTest("tg", 8, 3)], max_positions=256)
    session = _PreparedStream()
    m = run_generate(session, sets["tg3"], 1, FAST, 0.0)
    assert all(p[0] == "prepared" for p in session.streamed)  # prepared once, before the clock
    host = m.details["host_side"]
    assert host["what"] == "conversion" and host["median_ms"] == 1.0 and host["repeats"] == 7
    assert host["call"] == "ttft" and host["share_of_call"] is None  # done before the clock
    assert 0 < host["would_be_share_of_call"] < 0.6  # 1 ms against a TTFT of at least the 2 ms sleep
    assert m.details["timed_call"].endswith("the fake loop")


@pytest.mark.engine  # loads a real engine or model: not in `make test-fast`
def test_llamacpp_host_side_is_measured(tiny):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    session = load_session("llamacpp", tiny, "fp32", threads=1)
    sets = build_prompt_sets(tiny.path, [DecoderTest("pp", 24, 1), DecoderTest("tg", 24, 4)], max_positions=256)
    for name, call in (("pp24", "prefill"), ("tg4", "decode")):
        m = run_generate(session, sets[name], 1, FAST, 0.0)
        host = m.details["host_side"]
        assert host["inside_timed_call"] and host["call"] == call and "llama_batch" in host["what"]
        assert 0 < host["median_ms"] and 0 < host["share_of_call"] < 1
        assert "llama_decode" in m.details["timed_call"]
    # after the host-side timing the session still generates correctly
    session.reset()
    ids = sets["pp24"].prompts[:1]
    np.testing.assert_allclose(session.prefill(ids), session.forward_logits(ids)[:, -1], atol=1e-4)


def test_decoder_scenario_mismatch_is_a_one_line_error(tiny, capsys):
    assert main(["run", "--model", tiny.path, "--scenario", "latency", "--db", ":memory:"]) == 2
    assert "decoder" in capsys.readouterr().err
    assert main(["run", "--model", "minilm", "--scenario", "generate", "--db", ":memory:"]) == 2
    assert "needs a decoder" in capsys.readouterr().err
    assert main(["run", "--model", tiny.path, "--gen-len", "1", "--db", ":memory:"]) == 2
    assert main(["run", "--model", tiny.path, "--llm-config", "x.json", "--db", ":memory:"]) == 2
    assert "not both" in capsys.readouterr().err


def test_decoder_plan_cells(tiny, tmp_path):
    from enginebench.cli import build_parser
    from enginebench.config import RunConfig
    from enginebench.planning import plan_from_config

    config = tmp_path / "shape.json"
    config.write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "vocab_size": 400, "max_position_embeddings": 300}))
    args = build_parser().parse_args(["run", "--llm-config", str(config), "--engine", "torch", "--precision",
                                      "fp32,bf16", "--batch-size", "1,2", "--gen-len", "64"])
    plan = plan_from_config(RunConfig.from_cli(args))
    assert plan.model.kind == "decoder" and plan.reference_engine == "torch"
    assert {c.workload for c in plan.cells} == {"pp128", "tg64"}  # pp512 does not fit 300 positions
    assert len(plan.cells) == 2 * 2 * 2 and {c.scenario for c in plan.cells} == {"generate"}
    assert plan.workloads["tg64"].prompts.shape == (8, 128) and plan.workloads["pp128"].spec.seq_len == 128

    def plan_of(*argv):
        args = build_parser().parse_args(["run", "--llm-config", str(config), "--engine", "torch", *argv])
        return plan_from_config(RunConfig.from_cli(args))

    # --workload keeps the tests it names; a tg test still decodes after the smallest prompt
    only = plan_of("--prompt-len", "64,128", "--gen-len", "32,64", "--workload", "tg32")
    assert [(c.workload, c.scenario) for c in only.cells] == [("tg32", "generate")]
    assert only.workloads["tg32"].prompts.shape == (8, 64)
    for argv, message in [(["--workload", "corpus"], "--workload corpus is an encoder's workload"),
                          (["--workload", "tg16"], "make the tests pp128, tg128, pp512 here"),
                          (["--workload", "tg128", "--scenario", "server", "--qps", "1", "--slo-ttft", "100",
                            "--slo-tpot", "10"],
                           "generate scenario.s tests")]:
        with pytest.raises(UsageError, match=message):
            plan_of(*argv)
    with pytest.raises(UsageError, match="names a decoder's test: minilm is an encoder"):
        plan_from_config(RunConfig.from_cli(build_parser().parse_args(["run", "--workload", "tg128"])))


def test_a_generate_results_command_measures_that_test_only(tmp_path):
    """recommend's and the confirmation round's command for a tg pick: once it measured the prompt's pp test too."""
    import shlex

    from enginebench.analysis.recommend import reproduce_command
    from enginebench.cli import build_parser
    from enginebench.config import RunConfig
    from enginebench.plan import Cell
    from enginebench.planning import plan_from_config
    from enginebench.store.model import Result, Run

    config = tmp_path / "shape.json"
    config.write_text(json.dumps({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "vocab_size": 400, "max_position_embeddings": 300}))
    run = Run("r", "2026-12-04T00:00:00+00:00", {}, config={"argv": ["run", "--llm-config", str(config)]})
    for workload, seq_len in [("tg64", 96), ("pp128", 128)]:
        result = Result("torch", "synthetic", "bf16", "generate", workload, 2, seq_len, 1, 2, status="failed",
                        error="the configuration is what matters here")
        argv = shlex.split(reproduce_command(result, run))
        plan = plan_from_config(RunConfig.from_cli(build_parser().parse_args(argv[1:])))
        assert plan.cells == [Cell("torch", "bf16", "generate", workload, 2, 1, 2)]
        assert plan.workloads[workload].prompts.shape[1] == seq_len


@pytest.mark.slow
def test_run_end_to_end_json(tiny, tmp_path):
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "enginebench", "run", "--model", tiny.path, "--engine", "torch", "--duration",
           "0.2", "--warmup", "0.05", "--prompt-len", "16", "--gen-len", "8", "--repeat", "2", "--json", "--db", str(db)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    from enginebench.store.model import SCHEMA_VERSION

    assert run["schema_version"] == SCHEMA_VERSION
    by_test = {r["workload"]: r for r in run["results"]}
    assert set(by_test) == {"pp16", "tg8"}
    pp, tg = by_test["pp16"], by_test["tg8"]
    assert all(r["scenario"] == "generate" and r["status"] == "ok" for r in (pp, tg))
    assert pp["prefill_tokens_per_s"]["median"] > 0 and pp["decode_tokens_per_s"] is None
    rate = tg["decode_tokens_per_s"]
    assert rate["ci95"][0] <= rate["median"] <= rate["ci95"][1]
    assert tg["ttft_ms"]["median"] > 0 and tg["itl_ms"]["p99"] >= tg["itl_ms"]["median"]
    assert tg["fidelity"]["value"] == 1.0 and tg["fidelity"]["greedy_agreement"] == 1.0  # torch fp32 vs itself
    assert tg["fidelity"]["reference"] is True  # and marked as the reference, not as a pass
    # two independent processes, each with its own decode steps and TTFT per generation, stored apart
    assert [rep["index"] for rep in tg["repetitions"]] == [0, 1]
    for rep in tg["repetitions"]:
        assert len(rep["ttft_ns"]) == len(rep["generation_steps"]) >= 1
        assert sum(rep["generation_steps"]) == len(rep["worker_samples"][0])
    assert tg["ttft_ms"]["n"] == sum(len(rep["ttft_ns"]) for rep in tg["repetitions"])
    from enginebench.store.database import ResultStore

    with ResultStore(db) as store:
        stored = {r.workload: r for r in store.load_run(run["run_id"]).results}
    assert stored["tg8"].repetitions == tg["repetitions"]  # every figure can be rebuilt from the database
    shown = subprocess.run([sys.executable, "-m", "enginebench", "show", "--format", "md", "--db", str(db)],
                           capture_output=True, text=True, timeout=120)
    assert "| tg8 |" in shown.stdout and "pp16" in shown.stdout


def test_generate_results_and_decoder_table():
    from enginebench.formats.md import to_markdown
    from enginebench.plan import Cell
    from enginebench.scenarios.base import Measurement
    from enginebench.store.derive import build_result
    from enginebench.store.model import Run

    rng = np.random.default_rng(0)
    step_ns = rng.normal(10e6, 1e5, 200).astype(np.int64)  # 10 ms decode steps -> ~100 tokens/s
    tg = Measurement([step_ns], 1, 1.0, 2.0, 500.0, "bf16", 2.0,
                     details={"test": "tg16", "ttft_ns": [50_000_000, 52_000_000]})
    pp = Measurement([rng.normal(100e6, 1e6, 20).astype(np.int64)], 1, 128.0, 2.0, 500.0, "bf16", 2.0,
                     details={"test": "pp128"})
    context = dict(model="tiny", seq_len=128, engine_version="1", engine_options={},
                   details={"model_params": 50_000_000, "machine_speed": {"bandwidth_gbs": 10.0}})
    results = [build_result(Cell("torch", "bf16", "generate", name, 1, 1, 2), [(0, m)], **context)
               for name, m in (("pp128", pp), ("tg16", tg))]
    prefill, decode = results[0].prefill_tokens_per_s, results[1].decode_tokens_per_s
    assert prefill["median"] == pytest.approx(1280, rel=0.02) and prefill["ci95"][0] <= prefill["median"] <= prefill["ci95"][1]
    assert decode["median"] == pytest.approx(100, rel=0.02) and results[1].ttft_ms["median"] == pytest.approx(51)
    assert decode["roofline"]["bound_tokens_per_s"] == pytest.approx(100.0)  # 10 GB/s / (50 M x 2 bytes)
    assert results[1].itl_ms["n"] == 200 and results[0].decode_tokens_per_s is None
    run = Run("r1", "now", {}, {"model": {"params": 50_000_000, "size_bytes": 200 << 20}}, results)
    md = to_markdown(run)
    assert "| torch | pp128 | 1,2" in md and "| tg16 |" in md and "200.0 MiB" in md and "50.0 M" in md
    assert "precision bf16" in md  # constant: in the title, which says which precision ran


class _RunsAhead(_StreamOnly):
    """Generates on its own thread: says when each token was chosen (here 2 ms apart), yields them in a burst."""

    def stream(self, prompt, new_tokens):
        import time

        start = time.perf_counter_ns()
        self.step_times_ns = [start + 1_000_000 + k * 2_000_000 for k in range(new_tokens)]
        for _ in range(new_tokens):
            yield np.zeros(len(prompt), np.int64)


def test_stream_prefers_the_engines_own_token_times(tiny):
    sets = build_prompt_sets(tiny.path, [DecoderTest("tg", 8, 4)], max_positions=256)
    m = run_generate(_RunsAhead(), sets["tg4"], 1, FAST, 0.0)
    assert set(m.worker_samples[0].tolist()) == {2_000_000}
    assert all(t >= 1_000_000 for t in m.details["ttft_ns"])


def test_a_cells_known_fidelity_is_reused_and_an_unknown_one_measured(tiny, monkeypatch):
    """A later process of the cell is given what its first one measured (Job.fidelity): no second pass."""
    from enginebench.plan import Cell
    from enginebench.scenarios import generate
    from enginebench.scenarios.base import DECODER_REFERENCE, CellRun

    sets = build_prompt_sets(tiny.path, [DecoderTest("pp", 8, 1)], max_positions=256)
    passes = []
    monkeypatch.setattr(generate, "compare_decoder", lambda session, reference, precision: passes.append(1) or {
        "metric": "top1_agreement", "value": 0.5, "ok": False})

    def cell_run(known):
        session = _Plain()
        return CellRun(cell=Cell("fake", "fp32", "generate", "pp8", 1, 1, 1), workload=sets["pp8"], rule=FAST,
                       factory=_Plain, model_kind="decoder", precision="fp32",
                       references={DECODER_REFERENCE: object()}, session=lambda: session, loading=lambda: None,
                       loaded=lambda: None, cache={"load_s": 0.0, "load_peak_rss_mb": 1.0}, known_fidelity=known)

    known = {"metric": "top1_agreement", "value": 0.9, "ok": True}
    assert generate.Generate().measure(cell_run(known)).fidelity == known and not passes
    assert generate.Generate().measure(cell_run(None)).fidelity["value"] == 0.5 and passes == [1]
