"""`enginebench tune`: successive halving on synthetic engines with known speeds and fidelity (helpers/fake_engines.py),
the budget, reproducibility, and bad input refused before anything is measured."""

from __future__ import annotations

import json
import sqlite3

import pytest
from helpers import child_pythonpath
from helpers.fake_engines import TUNE_PLUGINS

from enginebench.errors import UsageError
from enginebench.measure.timing import StoppingRule
from enginebench.search import halving
from enginebench.search.space import Candidate, admission_order, candidates, pack_runs
from enginebench.search.tune import Tuner, check_request
from enginebench.store.model import Result


@pytest.fixture
def synthetic(monkeypatch):
    """The synthetic engines, for this process and the spawned children."""
    monkeypatch.setenv("ENGINEBENCH_ENGINES", TUNE_PLUGINS)
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())


def _result(c: Candidate, median_ms: float, fidelity: float = 1.0, status: str = "ok") -> Result:
    batch = c.batch_size
    return Result(c.engine, "minilm", c.precision, c.scenario, "corpus", batch, 128, c.workers, c.threads,
                  status=status, error=None if status == "ok" else "boom", samples=[int(median_ms * 1e6)],
                  latency_ms={"median": median_ms}, throughput={"items_per_s": 1000 * batch / median_ms},
                  verdict={"ok": True}, fidelity={"value": fidelity, "ok": fidelity >= 0.9999})


def _cand(engine="syn", precision="int8", threads=2, batch=1, **options) -> Candidate:
    return Candidate(engine, precision, "latency", batch, 1, threads, tuple(sorted(options.items())))


# -- ranking --------------------------------------------------------------------------------------------------

def test_a_fast_unfaithful_candidate_is_dropped_whatever_its_speed():
    fast_wrong, ok, failed = _cand("syn-wrong"), _cand(), _cand("syn", "fp32")
    ranked, dropped = halving.rank({fast_wrong: _result(fast_wrong, 0.1, fidelity=0.6), ok: _result(ok, 4.0),
                                    failed: _result(failed, 1.0, status="failed")}, "latency", 0.99)
    assert [c for c, _ in ranked] == [ok]
    assert dropped[fast_wrong].startswith("unfaithful: fidelity 0.6000 < 0.99")
    assert dropped[failed].startswith("failed")


def test_fp32_that_differs_from_the_reference_is_dropped_even_above_min_fidelity():
    c = _cand("syn", "fp32")
    ranked, dropped = halving.rank({c: _result(c, 1.0, fidelity=0.995)}, "latency", 0.99)
    assert not ranked and "differs from the reference" in dropped[c]


def test_throughput_ranks_items_per_second_higher_first():
    small, big = _cand(batch=1), _cand(batch=8)
    ranked, _ = halving.rank({small: _result(small, 2.0), big: _result(big, 8.0)}, "throughput", 0.99)
    assert [c for c, _ in ranked] == [big, small]  # 1000 items/s against 500


def test_a_candidate_measured_while_the_machine_ran_slow_is_judged_at_its_stored_speed():
    """Round 1's cells run minutes apart: one measured while the host ran at 42% of its stored GEMM speed (seen
    here: OpenVINO bf16 at 30 items/s, 190 in a quiet phase) is ranked on what it did at that speed."""
    slowed, steady, unprobed = _cand("syn", "bf16"), _cand("syn", "int8"), _cand("syn", "fp32")
    results = {slowed: _result(slowed, 4.0), steady: _result(steady, 2.0), unprobed: _result(unprobed, 2.5, 1 - 1e-9)}
    results[slowed].roofline = {"beside": {"factor": 0.42, "drifted": True}}
    results[steady].roofline = {"beside": {"factor": 1.0, "drifted": False}}
    for objective, best_first in (("latency", [slowed, steady, unprobed]), ("throughput", [slowed, steady, unprobed])):
        ranked, _ = halving.rank(results, objective, 0.99)
        assert [c for c, _ in ranked] == best_first, objective
    ranked, _ = halving.rank(results, "latency", 0.99)
    assert dict(ranked)[slowed] == pytest.approx(4.0 * 0.42) and dict(ranked)[unprobed] == 2.5


def test_halving_keeps_the_true_best_through_noisy_rounds():
    """64 candidates with known speeds, measured with 5% noise in round 1 and less later: the true best
    survives every halving, the unfaithful fastest never does."""
    import numpy as np

    rng = np.random.default_rng(1)
    cands = [_cand(threads=t, batch=1, mode=str(k)) for k in range(32) for t in (1, 2)]
    true_ms = {c: 2.0 + 0.1 * i for i, c in enumerate(cands)}
    wrong = cands[-1]
    true_ms[wrong] = 0.5
    alive, noise = cands, 0.05
    while len(alive) > halving.FINALISTS:
        measured = {c: _result(c, true_ms[c] * (1 + noise * rng.standard_normal()),
                               fidelity=0.6 if c == wrong else 1.0) for c in alive}
        ranked, _ = halving.rank(measured, "latency", 0.99)
        alive = [c for c, _ in ranked][:halving.survivors(len(ranked))]
        noise /= halving.ETA
        assert cands[0] in alive and wrong not in alive


# -- the candidate list ---------------------------------------------------------------------------------------

def test_candidates_come_from_the_engine_classes(synthetic, cpu_features):
    from enginebench.engines import engine_class
    from enginebench.models import resolve_model

    model = resolve_model("minilm")
    space = candidates(["syn", "syn-wrong"], model, "throughput", [1, 8], cores=2)
    assert {(c.engine, c.precision) for c in space} == {("syn", "fp32"), ("syn", "int8"), ("syn-wrong", "int8")}
    assert {c.options for c in space if c.engine == "syn"} == {(), (("mode", "fast"),)}  # metadata "tune": True
    assert {(c.scenario, c.workers, c.threads) for c in space} == {("latency", 1, 2), ("latency", 1, 1),
                                                                    ("throughput", 2, 1)}
    # the real engines: every precision they offer on this CPU (narrowed or not), int8-static included
    real = candidates(["onnxruntime", "openvino"], model, "latency", [1], cores=2)
    for engine in ("onnxruntime", "openvino"):
        cls = engine_class(engine)
        offered = {p for p in cls.precisions if cls.why_not_precision(p) is None}
        assert {c.precision for c in real if c.engine == engine} == offered
    # OpenVINO's bf16 follows the CPU's bf16 instructions as the features in use say: never on an AVX2-only CPU
    if not cpu_features.has_any(engine_class("openvino").cpu_needs["bf16"]):
        assert "bf16" not in {c.precision for c in real if c.engine == "openvino"}
    if cpu_features.narrowed_to == "avx2":
        assert not cpu_features.has_any({"avx512_bf16", "amx_bf16", "avx512f"})
    assert {dict(c.options).get("graph_optimization", "all") for c in real if c.engine == "onnxruntime"} == {
        "disable", "basic", "extended", "all"}
    # OpenVINO's streams only split a session's threads when it serves one request at a time: not searched
    assert not any(dict(c.options).keys() & {"hint", "num_streams"} for c in real if c.engine == "openvino")
    assert {dict(c.options).get("shapes", "dynamic") for c in real if c.engine == "openvino"} == {"dynamic", "static"}


def test_an_option_for_one_precision_is_tuned_for_that_precision_only():
    from enginebench.models import resolve_model

    space = candidates(["torch-compile"], resolve_model("minilm"), "latency", [32], cores=2)
    layers = {(c.precision, dict(c.options).get("int8_layers", "no-ffn-down")) for c in space}
    assert ("int8-static", "all") in layers and ("int8-static", "no-ffn-down") in layers
    assert {p for p, v in layers if v == "all"} == {"int8-static"}  # fp32 and bf16 are not measured twice
    assert len(space) == len(set(space))
    ort = {(c.precision, dict(c.options).get("int8_layers", "no-ffn-down"))
           for c in candidates(["onnxruntime"], resolve_model("minilm"), "latency", [32], cores=2)}
    assert {v for p, v in ort if p == "int8"} == {"no-ffn-down", "all"} and {p for p, v in ort if v == "all"} == {"int8"}
    openvino = candidates(["openvino"], resolve_model("minilm"), "latency", [32], cores=2)
    grouped = {(c.precision, dict(c.options).get("dynamic_quantization", "auto")) for c in openvino}
    assert {v for p, v in grouped if p == "int8"} >= {"auto", "off"} or "int8" not in {p for p, _ in grouped}
    assert {p for p, v in grouped if v != "auto"} <= {"int8"}
    static = {(c.precision, dict(c.options).get("int8_layers", "no-ffn-down")) for c in openvino}
    assert {p for p, v in static if v == "all"} <= {"int8-static"}
    if any(p == "int8-static" for p, _ in static):
        assert {v for p, v in static if p == "int8-static"} == {"no-ffn-down", "all"}


def test_same_seed_same_candidates_and_schedule(synthetic):
    from enginebench.models import resolve_model

    model = resolve_model("minilm")
    space = candidates(["syn", "syn-wrong"], model, "throughput", [1, 8, 32], cores=2)
    first = admission_order(space, seed=7, cores=2)
    assert admission_order(space, seed=7, cores=2) == first
    assert sorted(first) == sorted(space)
    assert any(admission_order(space, seed=s, cores=2) != first for s in range(8))
    # defaults on every core first: each engine × precision is tried before any other setting
    tier0 = {(c.engine, c.precision) for c in first[:3 * 3 * 2]}
    assert tier0 == {("syn", "fp32"), ("syn", "int8"), ("syn-wrong", "int8")}
    cost = halving.CostModel()
    rule = halving.round_rule(0)
    assert halving.fit(first, cost, rule, 1, 60.0) == halving.fit(admission_order(space, 7, 2), cost, rule, 1, 60.0)
    assert [halving.round_rule(i).duration_s for i in range(3)] == [0.5, 1.0, 2.0]


def test_round_one_tries_the_precisions_with_the_highest_ceilings_first_and_a_precision_option_as_a_precision():
    """Ranked by the machine's GEMM ceiling of what they compute (an AVX2-only machine's emulated bf16 last, its
    int8 first), each engine × precision on every core before anything else; int8_layers=all (an option that
    acts on a precision) is a precision of its own there, and a threading or graph option is not."""
    from enginebench.models import resolve_model
    from enginebench.search.space import precision_options

    space = candidates(["onnxruntime", "openvino"], resolve_model("minilm"), "throughput", [32], cores=2)
    avx2 = {"fp32": 188.0, "int8": 363.0, "bf16": 1.0}
    order = admission_order(space, seed=3, cores=2, ceilings=avx2)
    jobs = list(dict.fromkeys(c.job for c in order))
    first = [j for j in jobs if j[2] == 2 and all(name in precision_options(j[0]) for name, _ in j[3])]
    assert jobs[:len(first)] == first  # every precision (and precision option setting) on all cores first
    assert ("onnxruntime", "int8", 2, (("int8_layers", "all"),)) in first
    assert not any(dict(j[3]).get("graph_optimization") for j in first)
    ceilings = [avx2["int8" if j[1].startswith("int8") else j[1]] for j in first]
    assert ceilings == sorted(ceilings, reverse=True) and ceilings[0] == 363.0
    assert sorted(order) == sorted(space)
    # another machine, another order: where bf16 is native and fast it goes before fp32
    amx = admission_order(space, seed=3, cores=2, ceilings={"fp32": 199.0, "int8": 860.0, "bf16": 589.0})
    precisions = list(dict.fromkeys(c.precision for c in amx))
    assert precisions[0].startswith("int8") and ("bf16" not in precisions or
                                                 precisions.index("bf16") < precisions.index("fp32"))


def test_round_one_follows_the_fastest_families_once_each_is_tried():
    """After every engine × precision has a measurement, the rest of round 1 goes to the other threadings and
    options of the fastest faithful family first (OpenVINO's every-Linear int8 with static shapes or two
    single-thread workers was 2-7% faster than as first tried; in the seeded order round 1 never reached
    them), and to the variants of a family that lost the fidelity bound last."""
    from enginebench.models import resolve_model
    from enginebench.search.space import family, follow_leaders

    space = candidates(["onnxruntime", "openvino"], resolve_model("minilm"), "throughput", [32], cores=2)
    order = admission_order(space, seed=3, cores=2, ceilings={"fp32": 202.0, "int8": 863.0, "bf16": 438.0})
    families = list(dict.fromkeys(family(c) for c in order))
    firsts = [next(c for c in order if family(c) == f) for f in families]
    assert order[:len(firsts)] == firsts  # admission: one of each family first (all cores, default options)
    leader = next(c for c in firsts if family(c) == ("openvino", "int8-static", (("int8_layers", "all"),)))
    lost = next(c for c in firsts if family(c) == ("onnxruntime", "int8", (("int8_layers", "all"),)))
    tried = firsts[:len(firsts) // 2] + [leader, lost]
    pending = [c for c in order if c not in tried]
    ranked = [leader] + [c for c in tried if c not in (leader, lost)]
    queue = follow_leaders(pending, ranked, [lost])
    assert sorted(queue) == sorted(pending)
    untried = [c for c in pending if family(c) not in {family(t) for t in tried}]
    assert queue[:len(untried)] == untried  # the families not tried yet keep their admission order, first
    after = queue[len(untried):]
    assert {family(c) for c in after[:5]} == {family(leader)}
    assert any(("shapes", "static") in c.options for c in after[:5])
    lost_variants = [c for c in pending if family(c) == family(lost)]
    assert lost_variants and after[-len(lost_variants):] == lost_variants  # last, in their admission order
    ranks = [ranked.index(next(r for r in ranked if family(r) == family(c))) for c in after if family(c) != family(lost)]
    assert ranks == sorted(ranks)  # each tried family's variants in the order of its best figure


def test_round_one_leaves_for_last_what_its_roofline_says_cannot_beat_the_leader():
    """The roofline bound of a candidate is at or above the roofline its share would divide by, however much of the
    model ran int8; once OpenVINO's every-Linear int8 measured 200 items/s on the VNNI EPYC's ceilings, every fp32
    candidate (70/s at most) and bf16 one (152/s) goes after every int8 one, and a slow leader moves nothing."""
    from enginebench.measure.compute_roofline import encoder_flops, flop_parts, model_structure, roofline_share
    from enginebench.models import resolve_model
    from enginebench.search.space import family, follow_leaders, roofline_bound

    model = resolve_model("minilm")
    flops = encoder_flops(model_structure(model.path), 128)
    per_item = sum(flops.values())
    ceilings = {"fp32": 202.0, "int8": 863.0, "bf16": 438.0}
    speed = {"gemm_gflops_by_precision": ceilings, "measured_at": "2026-12-07"}
    for executed, share, attention in (("fp32", 0.0, 0), ("bf16", 0.0, 0), ("int8", 2 / 3, 0), ("int8", 1.0, 6),
                                       ("int8", 1.0, 12)):
        quantization = {"share_of_matmul_flops": share, "activations": "uint8",
                        "attention_products": {"int8": attention, "total": 12}}
        roof = roofline_share(1.0, None, flop_parts(flops, executed, quantization, executed), speed)
        bound = roofline_bound(Candidate("openvino", executed, "latency", 32, 1, 2), ceilings, per_item)
        assert bound >= roof["roofline_items_per_s"] * (1 - 1e-9), (executed, share, attention)
    assert roofline_bound(Candidate("x", "int8", "latency", 32, 1, 2), {}, per_item) is None

    space = candidates(["onnxruntime", "openvino"], model, "throughput", [32], cores=2)
    order = admission_order(space, seed=3, cores=2, ceilings=ceilings)
    leader = next(c for c in order if family(c) == ("openvino", "int8-static", (("int8_layers", "all"),)))
    pending = [c for c in order if c != leader]

    def below(rate):
        return lambda c: roofline_bound(c, ceilings, per_item) * 1.2 < rate

    queue = follow_leaders(pending, [leader], [], below(200.0))
    hopeless = [c for c in queue if below(200.0)(c)]
    assert sorted(queue) == sorted(pending) and queue[len(queue) - len(hopeless):] == hopeless
    assert "fp32" in {c.precision for c in hopeless} and {c.precision for c in hopeless} <= {"fp32", "bf16"}
    assert all(c.precision.startswith("int8") for c in queue[:len(queue) - len(hopeless)])
    assert follow_leaders(pending, [leader], [], below(60.0)) == follow_leaders(pending, [leader], [])


def test_later_rounds_climb_from_the_leader_to_a_configuration_round_one_never_reached(synthetic, tmp_path,
                                                                                      monkeypatch):
    """Round 1 reaches one job (its share spent); the fastest configuration is two settings away from its leader
    (two single-thread workers and mode=fast). Each later round adds the leader's neighbours not measured yet, so
    the final has it; halving the survivors alone never could."""
    from enginebench.search import tune as tune_module
    from enginebench.search.space import distance, neighbours

    monkeypatch.setattr(tune_module, "cached_machine_speed", lambda: None)  # no roofline bound: the climb alone
    request = check_request("minilm", objective="throughput", engines="syn", precisions="int8", batch_size="8",
                            budget="10m", db=str(tmp_path / "t.db"))
    now = [0.0]
    tuner = Tuner(request, clock=lambda: now[0])
    tuner.prepare()
    tuner.cost.prior_item_thread_s = 0.01  # calls priced: no ceilings to measure before the clock
    # a job costs a minute in round 1's short cells (its share holds one) and seconds later on
    tuner.cost.run = lambda members, rule, repeat: (60.0 if rule.duration_s < 1 else 5.0) * repeat * len(
        {c.job for c in members})

    def rate(c: Candidate) -> float:
        options = dict(c.options)
        return 100.0 * (1.3 if options.get("mode") == "fast" else 1.0) * (1.2 if c.workers == 2 else 1.0) * (
            0.7 if c.threads == 1 and c.workers == 1 else 1.0)

    def measure(rd, members, rule, repeat, deadline):
        now[0] += 250.0 if rd.name == "round 1" else tuner.cost.run(members, rule, repeat)
        return {c: _result(c, 1000 * c.batch_size / rate(c)) for c in members}, None, 10.0, None

    tuner.measure = measure
    tuner.run()
    best = max((c for c in tuner.space if c.engine == "syn"), key=rate)
    assert (best.workers, dict(best.options).get("mode")) == (2, "fast")
    first, *later, final = tuner.rounds
    assert best not in first.candidates and len({c.job for c in first.candidates}) == 1
    assert min(distance(best, c) for c in first.candidates) == 2
    assert later and best in later[-1].candidates and best in final.candidates
    assert later[-1].ranked[0][0] == best
    for previous, rd in zip([first, *later], later):  # each later round took the leader's unmeasured neighbours
        leader = previous.ranked[0][0]
        measured = {c for r in tuner.rounds[:tuner.rounds.index(rd)] for c in r.candidates}
        assert set(neighbours(leader, tuner.space)) - measured <= set(rd.candidates)


def test_micro_batch_is_tried_only_where_it_splits_the_call():
    from enginebench.models import resolve_model

    space = candidates(["onnxruntime", "openvino"], resolve_model("minilm"), "throughput", [1, 8, 32], cores=2)
    split = {(c.engine, c.batch_size) for c in space if dict(c.options).get("micro_batch")}
    assert split == {("onnxruntime", 32), ("openvino", 32)}  # 8 at batch 8 or 1 is the same work as without it
    for engine in ("onnxruntime", "openvino"):
        at32 = [c for c in space if c.engine == engine and c.batch_size == 32]
        assert 2 * sum(bool(dict(c.options).get("micro_batch")) for c in at32) == len(at32)


def test_within_a_family_round_one_tries_the_leaders_neighbours_first():
    """One setting changed from the family's fastest candidate before two: from OpenVINO's every-Linear int8 as
    first tried, static shapes, two workers and runs of 8 each alone, then, once static shapes lead, static shapes
    with runs of 8, before any other pair."""
    from enginebench.models import resolve_model
    from enginebench.search.space import distance, family, follow_leaders

    space = candidates(["openvino"], resolve_model("minilm"), "throughput", [32], cores=2)
    order = admission_order(space, seed=3, cores=2, ceilings={"fp32": 202.0, "int8": 863.0, "bf16": 438.0})
    all_int8 = ("openvino", "int8-static", (("int8_layers", "all"),))
    leader = next(c for c in order if family(c) == all_int8)
    others = [next(c for c in order if family(c) == f) for f in dict.fromkeys(map(family, order)) if f != all_int8]
    pending = [c for c in order if c != leader and c not in others]
    queue = follow_leaders(pending, [leader, *others], [])
    mine = [c for c in queue if family(c) == all_int8]
    steps = [distance(c, leader) for c in mine]
    assert steps == sorted(steps) and steps[0] == 1 and max(steps) >= 3
    near = {c.options for c in mine if distance(c, leader) == 1}
    assert {(("int8_layers", "all"), ("shapes", "static")), (("int8_layers", "all"), ("micro_batch", "8"))} <= {
        tuple(sorted(o)) for o in near}
    static = next(c for c in mine if dict(c.options).get("shapes") == "static" and distance(c, leader) == 1)
    queue = follow_leaders([c for c in pending if c != static], [static, leader, *others], [])
    mine = [c for c in queue if family(c) == all_int8]
    assert [distance(c, static) for c in mine] == sorted(distance(c, static) for c in mine)
    pair = dict(static.options, micro_batch="8")
    ones = [c for c in mine if distance(c, static) == 1]
    assert any(dict(c.options) == pair and (c.scenario, c.workers, c.threads) == (
        static.scenario, static.workers, static.threads) for c in ones) and mine[:len(ones)] == ones


def test_runs_give_each_engine_one_option_setting():
    a, b, c = _cand(mode="fast"), _cand(), _cand("torch", "fp32")
    assert pack_runs([a, b, c]) == [[a, c], [b]]


def test_cost_model_learns_loads_and_overhead():
    cost = halving.CostModel()
    c = _cand()
    rule = StoppingRule(duration_s=1.0, min_samples=3, warmup_s=0.0)
    r = _result(c, 10.0)
    r.load_s = 2.0
    cost.learn([c], rule, 1, {c: r}, wall_s=2.0 + 1.0 + 2 * 0.5 + 0.03)  # load + cell + 2 processes × 0.5
    assert cost.load(c) == 2.0 and cost.load(_cand("other")) == 2.0  # unknown engines: the median so far
    assert cost.overhead_s == pytest.approx(0.5, abs=0.05)
    assert cost.run([c], rule) == pytest.approx(2.0 + 1.03 + 2 * cost.overhead_s, abs=0.05)
    # two workers each load their session in a process of their own, started side by side
    alone, workers = Candidate("syn", "int8", "latency", 1, 1, 1), Candidate("syn", "int8", "throughput", 1, 2, 1)
    assert cost.cell(workers, rule) == pytest.approx(cost.cell(alone, rule) + cost.load(workers) + cost.overhead_s)


def test_a_call_not_measured_yet_is_priced_per_item_and_thread_not_at_zero():
    """Before any call is measured a batch costs the prior (the model's FLOPs at 70% of the fp32 roofline);
    after, the median seconds an item took a thread among the candidates measured: a batch of 32 on 2 cores
    priced at 0 s made round 1 of a 10-minute tune run 4 min 29 s against 2 min 10 s planned."""
    rule = StoppingRule(duration_s=0.5, min_samples=3, warmup_s=0.2)
    unknown = halving.CostModel()
    assert unknown.call(_cand()) == 0.0  # no prior: today's floor, the duration alone
    cost = halving.CostModel(prior_item_thread_s=0.04)
    b32 = _cand(batch=32, threads=2)
    assert cost.call(b32) == pytest.approx(0.04 * 32 / 2)
    assert cost.cell(b32, rule) == pytest.approx(0.2 + 3 * 0.64 + max(rule.min_warmup, 1) * 0.64)
    measured = _cand("torch", "fp32", threads=1, batch=8)
    r = _result(measured, 400.0)  # 400 ms a call of 8 items on one thread: 0.05 s an item-thread
    cost.learn([measured], rule, 1, {measured: r}, wall_s=10.0)
    assert cost.call(measured) == pytest.approx(0.4)
    assert cost.call(b32) == pytest.approx(0.05 * 32 / 2)  # learnt from the measured candidate


def test_the_search_prices_calls_from_the_models_flops_and_the_stored_ceilings(synthetic, tmp_path, monkeypatch,
                                                                              cpu_features):
    import socket

    from enginebench.measure.compute_roofline import encoder_flops
    from enginebench.search import tune
    from enginebench.store.database import ResultStore

    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))  # no per-machine ceilings but the db's
    db = str(tmp_path / "t.db")
    request = check_request("minilm", engines="syn", precisions="fp32", batch_size="32", budget="10m", db=db)
    blind = Tuner(request)
    blind.prepare()
    assert blind.cost.prior_item_thread_s == 0.0  # no ceilings: nothing is measured before the search
    with ResultStore(db) as store:
        store.add_machine_speed({"measured_at": "2026-12-05T00:00:00+00:00", "hostname": socket.gethostname(),
                                 "bandwidth_gbs": 30.0, "gemm_gflops": 188.0,
                                 "details": {"cpu_features": cpu_features.record()}})  # as `machine` keeps it
    tuner = Tuner(request)
    tuner.prepare()
    flops = sum(encoder_flops({"layers": 6, "hidden_size": 384, "intermediate_size": 1536}, 128).values())
    per_item_thread = flops / (188e9 / tuner.cores) / tune.PRIOR_SHARE
    assert tuner.cost.prior_item_thread_s == pytest.approx(per_item_thread)
    first = tuner.order[0]
    assert tuner.cost.call(first) == pytest.approx(per_item_thread * 32 / first.threads)


def test_ceilings_not_measured_yet_are_measured_once_before_the_budget_starts(synthetic, tmp_path, monkeypatch,
                                                                             cpu_features):
    """Measured by the first run instead (30 s on a 2-core AVX2 machine), they took all of round 1's share of a
    75 s budget: one candidate measured, no final round, no answer."""
    from enginebench.search import tune

    monkeypatch.setenv("ENGINEBENCH_CACHE", str(tmp_path / "cache"))
    events: list[str] = []
    speed = {"measured_at": "2026-12-06T00:00:00+00:00", "bandwidth_gbs": 30.0, "gemm_gflops": 188.0,
             "details": {"cpu_features": cpu_features.record()}}
    monkeypatch.setattr(tune, "measure_and_cache_machine_speed", lambda: (events.append("ceilings"), (speed, True))[1])
    monkeypatch.setattr(tune, "cached_machine_speed", lambda: speed if "ceilings" in events else None)
    request = check_request("minilm", engines="syn", precisions="int8", budget="10m", db=str(tmp_path / "t.db"))
    notes: list[str] = []
    tuner = Tuner(request, clock=lambda: (events.append("clock"), 0.0)[1], on_note=notes.append)
    tuner.prepare()
    assert tuner.cost.prior_item_thread_s == 0.0 and "ceilings" not in events  # prepare measures nothing
    tuner.measure = lambda rd, members, rule, repeat, deadline: ({c: None for c in members}, None, 0.0, None)
    tuner.run()
    assert events.count("ceilings") == 1 and events.index("ceilings") < events.index("clock")
    assert tuner.cost.prior_item_thread_s > 0  # and the search prices calls from them
    assert "before the budget starts" in notes[0]
    again = Tuner(request, clock=lambda: 0.0, on_note=notes.append)
    again.prepare()
    again.measure = tuner.measure
    again.run()
    assert events.count("ceilings") == 1 and len(notes) == 2  # kept: the next search measures nothing


def test_round_one_stops_where_its_next_run_would_overrun_its_share_more_than_stopping_leaves(synthetic, tmp_path):
    """Round 1 runs one job at a time while its share of the budget lasts; a job that costs more than the room
    left starts only when its overrun would be less than the room it leaves unused (it ran 4m23s of a 4m share
    with a whole job started near the end)."""
    request = check_request("minilm", engines="syn,syn-wrong", precisions="int8", budget="10m",
                            db=str(tmp_path / "t.db"))
    now = [0.0]
    tuner = Tuner(request, clock=lambda: now[0])
    tuner.prepare()
    job_s = 100.0  # each run of round 1 takes this long, and the cost model knows it
    tuner.cost.run = lambda members, rule, repeat: job_s * len(pack_runs(members))
    tuner.cost.prior_item_thread_s = 0.01  # calls priced: no ceilings to measure before the clock

    def measure(rd, members, rule, repeat, deadline):
        now[0] += job_s if rd.name == "round 1" else 1.0
        return {c: _result(c, 2.0 + c.threads) for c in members}, None, job_s, None

    tuner.measure = measure
    tuner.run()
    share = halving.ROUND1_SHARE * request.budget_s  # 240 s: runs end at 100, 200; 40 s left < 100 / 2
    first = tuner.rounds[0]
    assert len({c.job for c in tuner.order}) >= 3  # a third job was there to start (six with two cores)
    assert first.spent_s == 200.0 and share - first.spent_s < job_s / 2
    assert len({c.job for c in first.candidates}) == 2


# -- bad input ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--budget", "soon"], "--budget 'soon' is not a duration: give e.g. --budget 20m"),
    (["--budget", "5s"], "too short"),
    (["--budget", "30s", "--engine", "onnxruntime,torch", "--objective", "latency"],
     "--budget 30s cannot hold one candidate and a final round"),
    (["--engine", "nope"], "unknown engine 'nope'"),
    (["--objective", "speed"], "--objective 'speed' is unknown"),
    (["--min-fidelity", "2"], "must be a number above 0 and at most 1"),
    (["--objective", "latency", "--batch-size", "1,8"], "give one --batch-size"),
    (["--workload", "corpus,titles"], "one --workload"),
])
def test_bad_input_exits_2_before_measuring(tmp_path, capsys, argv, message):
    from enginebench.cli import args as cli_args
    from enginebench.cli import tune as tune_cli

    db = tmp_path / "t.db"
    parser = cli_args.Parser(prog="enginebench")
    tune_cli.add_parsers(parser.add_subparsers(dest="command", parser_class=cli_args.Parser))
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("*", r"\*")) as e:
        tune_cli.cmd_tune(parser.parse_args(["tune", "--db", str(db), *argv]))
    assert e.value.exit_code == 2
    assert not db.exists()  # nothing stored, nothing measured


def test_bad_input_from_python_raises_usage_error():
    with pytest.raises(UsageError, match="not a duration"):
        check_request("minilm", budget="twenty minutes")


# -- end to end on synthetic engines --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.waits  # the true best among sleeping fake engines, within a wall-clock budget
def test_tune_finds_the_true_best_within_the_budget_and_stores_every_cell(synthetic, tmp_path):
    """Known speeds (fake_engines.BASE_MS): syn int8 mode=fast on both cores is the fastest faithful (2 ms);
    syn-wrong is 4× faster still but unfaithful (cosine 0.6). int8 only: six candidates, the best admitted fifth,
    so round 1's share of the budget (40%) holds them all even where a run of a fake engine's process takes 4 s."""
    db = str(tmp_path / "tune.db")
    seen = []
    budget = 75
    tuner = Tuner(check_request("minilm", objective="latency", engines="syn,syn-wrong", precisions="int8",
                                budget=f"{budget}s", seed=3, db=db),
                  on_progress=lambda text, elapsed, budget: seen.append((elapsed, budget)))
    tuner.prepare()
    tuning = tuner.run()

    best = tuning.recommendation.best
    assert (best.engine, best.precision, best.threads, best.engine_options["mode"]) == ("syn", "int8", 2, "fast")
    assert all(r.engine != "syn-wrong" for rd in tuning.rounds[1:] for r in rd.candidates)
    assert any(why.startswith("unfaithful") for why in tuning.rounds[0].dropped.values())
    # the budget: never over by more than one cell of the final round (warm-up + duration) and the abort
    final = tuning.rounds[-1]
    assert final.name == "final" and final.repeat == halving.REPEAT_FINAL
    assert tuning.elapsed_s <= budget + final.rule.warmup_s + final.rule.duration_s + 1
    assert seen and all(b == budget for _, b in seen)
    # the baselines measured in the best's cell, and the ratio against them
    assert {v.label.split(" (")[0] for v in tuning.recommendation.versus} >= {"the default path"}
    lines = "\n".join(tuning.lines())
    assert "of the 1m15s budget" in lines and "reproduce: enginebench run" in lines and "-o syn.mode=fast" in lines

    # every measured cell is stored, and every run of the session says what was tried
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert stored == sum(len(run.results) for rd in tuning.rounds for run in rd.runs)
    ranked = [c for rd in tuning.rounds for c, _ in rd.ranked]
    assert stored >= len(ranked) + sum(why.startswith("unfaithful") for rd in tuning.rounds for why in rd.dropped.values())
    configs = [json.loads(c) for (c,) in conn.execute("SELECT config FROM runs")]
    assert len(configs) == len(tuning.runs)
    for config in configs:
        story = config["tune"]
        assert story["session"] == tuning.session and story["seed"] == 3
        assert story["space"] == [c.key for c in tuning.space]
        assert [rd["name"] for rd in story["schedule"]] == [rd.name for rd in tuning.rounds]
        assert story["recommended"] == "syn int8 latency b1 1×2 mode=fast"
        assert set(story["candidates"]) <= set(story["space"]) | {k for rd in story["schedule"] for k in rd["baselines"]}


@pytest.mark.slow
@pytest.mark.serial  # a wall-clock budget: not beside another worker
def test_tune_on_real_engines_smoke(tmp_path):
    """The real thing, tiny: two engines, batch 1, latency, a 90 s budget (60 s is refused up front when the
    calls are priced from the stored ceilings: about 19 s for a candidate and 41 s for its final round)."""
    from enginebench.search.tune import tune

    tuning = tune("minilm", objective="latency", engines="onnxruntime,torch", precisions="fp32,int8",
                  budget="90s", db=str(tmp_path / "t.db"))
    print("\n".join(tuning.lines()))
    assert tuning.elapsed_s <= 90 + 15
    assert tuning.recommendation is not None and tuning.recommendation.best is not None
    assert tuning.recommendation.best.engine in ("onnxruntime", "torch")
