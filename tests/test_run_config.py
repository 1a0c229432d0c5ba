"""One typed run configuration (config.py): the command line, Python keywords and a sweep file give the same
RunConfig; it is stored as JSON and read back exactly; resume reads it back without parsing a command line
(an older run stored with only its argv still resumes); a bad value is one line, before anything is measured."""

from __future__ import annotations

import json
import random
import sqlite3
import textwrap

import pytest
from helpers.fake_engines import FAULT_PLUGINS

import enginebench as eb
from enginebench.cli import build_parser, main
from enginebench.config import RunConfig
from enginebench.errors import UsageError
from enginebench.sweep.spec import load_sweep


@pytest.fixture(autouse=True)
def _fault_engine(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)


def _cli(*argv) -> RunConfig:
    return RunConfig.from_cli(build_parser().parse_args(["run", *argv]))


def _toml(tmp_path, text: str) -> RunConfig:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent(text))
    parts = load_sweep(str(path), pin_cpus=False).parts
    assert len(parts) == 1
    return parts[0].config


# -- one configuration from three places ----------------------------------------------------------------------

def test_cli_keywords_and_a_sweep_file_give_the_same_config(tmp_path):
    cli = _cli("--model", "minilm", "--engine", "fault", "--workload", "titles", "--scenario", "latency,concurrency",
               "--batch-size", "1,16", "--batch-size", "4", "--duration", "500ms", "--warmup", "0", "--repeat", "2",
               "--seed", "7", "--timeout", "2m", "--max-memory", "1.5GB", "--retries", "1", "--concurrency", "1,2",
               "-o", "fault.call_ms=2")
    keywords = RunConfig.from_keywords("minilm", engines=["fault"], workloads="titles",
                                       scenarios=["latency", "concurrency"], batch_size=[1, 16, 4], duration=0.5,
                                       warmup=0, repeat=2, seed=7, timeout="120s", max_memory="1536MB", retries=1,
                                       concurrency=[1, 2], options={"fault": {"call_ms": 2}})
    toml = _toml(tmp_path, """\
        model = "minilm"
        engine = "fault"
        workload = ["titles"]
        scenario = ["latency", "concurrency"]
        batch_size = [1, 16, 4]
        duration = "500ms"
        warmup = 0
        repeat = 2
        seed = 7
        timeout = "2m"
        max_memory = "1536"
        retries = 1
        concurrency = [1, 2]

        [options.fault]
        call_ms = 2
        """)
    assert cli == keywords == toml
    assert cli.batch_sizes == [1, 16, 4] and cli.duration_s == 0.5 and cli.timeout_s == 120.0
    assert cli.max_memory_mb == 1536.0 and cli.engine_options == {"fault": {"call_ms": "2"}}
    assert cli.scenario_settings == {"concurrency": [{"clients": 1}, {"clients": 2}]}


def test_serving_settings_are_typed_the_same_from_each_place(tmp_path):
    cli = _cli("--engine", "fault", "--workload", "titles", "--scenario", "server", "--qps", "40", "--slo-p99", "50ms",
               "--max-batch", "4", "--max-wait", "0.002s")
    keywords = RunConfig.from_keywords(engines="fault", workloads="titles", scenarios="server", qps=40, slo_p99=50,
                                       max_batch=4, max_wait="2ms")
    toml = _toml(tmp_path, """\
        engine = "fault"
        workload = "titles"
        scenario = "server"
        qps = 40
        slo_p99 = "0.05s"
        max_batch = 4
        max_wait = 2
        """)
    assert cli == keywords == toml
    assert (cli.serving.qps, cli.serving.slo_p99_ms, cli.serving.max_batch, cli.serving.max_wait_ms) == (40, 50, 4, 2)


def test_a_float_is_not_taken_for_a_whole_number():
    with pytest.raises(UsageError, match="--batch-size '2.5' is not a whole number"):
        RunConfig.from_keywords(batch_size=[2.5])
    with pytest.raises(UsageError, match="--repeat True is not a whole number"):
        RunConfig.from_keywords(repeat=True)


# -- stored as JSON, read back exactly ------------------------------------------------------------------------

_CHOICES = {
    "model": ["minilm", "/models/encoder"], "engine": ["fault", "torch,onnxruntime", ["openvino", "fault"]],
    "precision": ["fp32", "fp32,int8"], "workload": ["titles", "corpus,titles"], "batch_size": [[1], "1,8,64", 3],
    "workers": ["1,2", [4]], "threads": [2, "1,3"], "threads_per_worker": ["1"], "seq_len": [64, "256"],
    "prompt_len": ["16,32"], "gen_len": [8], "corpus": ["docs.txt"], "seed": [0, 3, "12"], "quick": [True, False],
    "duration": ["1.5s", 0.25, "2m", "300ms", "1e-1"], "min_samples": [5, "20"], "warmup": [0, "0.05s", 0.3],
    "repeat": [1, "3"], "timeout": ["90s", 7.5], "load_timeout": ["1h"], "cpus": ["0-3", "0,2"], "until": ["/x/y"],
    "max_memory": ["500MB", "4GB", 100.5], "retries": [0, 2], "option": [["fault.call_ms=0.5"],
                                                                        {"onnxruntime": {"graph_optimization": "all"}}],
}


def _random_config(rng: random.Random) -> RunConfig:
    chosen = {name: rng.choice(values) for name, values in _CHOICES.items() if rng.random() < 0.5}
    if rng.random() < 0.3:
        chosen |= {"scenario": "server", "qps": rng.choice([10, "2.5"]), "slo_p99": rng.choice(["50", "0.02s"]),
                   "max_batch": 8, "max_wait": rng.choice(["1.5", "3ms"])}
        if rng.random() < 0.5:
            chosen |= {"find_max_qps": True, "search_within": rng.choice(["20%", 12.5, "7"])}
    elif rng.random() < 0.3:
        chosen |= {"scenario": "latency,concurrency", "concurrency": rng.choice(["1,4", [2, 8]])}
    return RunConfig.from_keywords(**chosen)


def test_json_and_the_command_line_give_back_the_same_config():
    rng = random.Random(18)
    configs = [RunConfig()] + [_random_config(rng) for _ in range(40)]
    assert len({c.to_json() for c in configs}) > 30  # varied enough to mean something
    for config in configs:
        text = config.to_json()
        back = RunConfig.from_json(text)
        assert back == config and back.to_json() == text
        assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # as the store keeps it
        assert RunConfig.from_argv(config.to_argv()) == config  # the command people see gives it too
        assert _cli(*config.to_argv()) == config


def test_a_config_of_another_version_or_shape_is_refused():
    stored = RunConfig().to_dict()
    with pytest.raises(UsageError, match="another version"):
        RunConfig.from_dict({**stored, "version": 99})
    with pytest.raises(UsageError, match="cannot be read"):
        RunConfig.from_dict({**stored, "no_such_field": 1})


# -- resume ----------------------------------------------------------------------------------------------------

def _flaky_run(tmp_path, monkeypatch):
    """A stored run whose first cell failed (its first process crashed): resume with retry_failed measures it."""
    monkeypatch.setenv("ENGINEBENCH_TEST_FLAKY_DIR", str(tmp_path))
    db = str(tmp_path / "r.db")
    run = eb.run("minilm", engines="fault", workloads="titles", scenarios="latency", batch_size=[1, 2],
                 duration="0.2s", warmup="0.05s", min_samples=3, repeat=1, options={"fault": {"behaviour": "flaky"}},
                 db=db)
    assert [r.status for r in run.results] == ["failed", "ok"]
    return run, db


def _store_config(db: str, run, config: dict) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET config = ? WHERE run_id = ?", (json.dumps(config), run.run_id))


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_a_run_resumes_from_its_stored_config_without_reading_a_command_line(tmp_path, monkeypatch):
    run, db = _flaky_run(tmp_path, monkeypatch)
    assert RunConfig.from_dict(run.config["run_config"]).batch_sizes == [1, 2]
    _store_config(db, run, {k: v for k, v in run.config.items() if k != "argv"})  # no command line at all

    def no_argv(cls, argv):
        raise AssertionError("resume parsed a command line")

    monkeypatch.setattr(RunConfig, "from_argv", classmethod(no_argv))
    done = eb.resume(run.run_id, db=db, retry_failed=True)
    assert done.run_id == run.run_id and [r.status for r in done.results] == ["ok", "ok"]


@pytest.mark.slow  # over 5 s here (child processes or a long simulation): not in `make test-fast`
def test_a_run_stored_with_only_its_argv_still_resumes(tmp_path, monkeypatch, capsys):
    run, db = _flaky_run(tmp_path, monkeypatch)
    assert run.config["argv"][:2] == ["--model", "minilm"]
    _store_config(db, run, {k: v for k, v in run.config.items() if k != "run_config"})  # as runs were stored
    read = []
    from_argv = RunConfig.from_argv.__func__

    def reading(cls, argv):
        read.append(argv)
        return from_argv(cls, argv)

    monkeypatch.setattr(RunConfig, "from_argv", classmethod(reading))
    assert main(["run", "--resume", run.run_id, "--db", db, "--retry-failed", "--json"]) == 0
    assert read == [run.config["argv"]]
    assert [r["status"] for r in json.loads(capsys.readouterr().out)["results"]] == ["ok", "ok"]


# -- bad values: one line, before anything is measured ---------------------------------------------------------

BAD = [  # (option, value, what the message says)
    ("engine", "no-such-engine", "unknown engine 'no-such-engine'"),
    ("precision", "int3", "unknown precision 'int3'"),
    ("workload", "poems", "unknown workload 'poems'"),
    ("scenario", "marathon", "unknown scenario 'marathon'"),
    ("batch_size", "0", "--batch-size 0 must be at least 1"),
    ("workers", "many", "--workers 'many' is not a whole number"),
    ("seq_len", "-4", "--seq-len -4 must be at least 1"),
    ("seed", "-1", "--seed '-1' must be a whole number >= 0"),
    ("duration", "10 parsecs", "--duration '10 parsecs' is not a duration"),
    ("warmup", "-1s", "--warmup '-1s' must be zero or more"),
    ("repeat", "two", "--repeat 'two' is not a whole number"),
    ("timeout", "soon", "--timeout 'soon' is not a duration"),
    ("max_memory", "lots", "--max-memory 'lots' is not a memory size"),
    ("retries", "x", "--retries 'x' must be a whole number >= 0"),
    ("qps", "100", "--qps is for the serving scenarios"),
    ("concurrency", "0", "--concurrency is for the concurrency scenario"),
]


@pytest.mark.parametrize("option, value, says", BAD)
def test_a_bad_value_is_one_line_from_every_place_and_nothing_runs(tmp_path, capsys, option, value, says):
    db = tmp_path / "bad.db"
    assert main(["run", "--" + option.replace("_", "-"), value, "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("enginebench: error: ") and says in err
    assert not db.exists() or sqlite3.connect(db).execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
    with pytest.raises(UsageError, match=says.replace("(", r"\(")):
        eb.run(db=str(db), **{option: value})
    path = tmp_path / "s.toml"
    path.write_text(f'# a sweep of one bad value\n{option} = "{value}"\n')
    with pytest.raises(UsageError) as e:
        load_sweep(str(path), pin_cpus=False)
    assert "line 2" in str(e.value) and says in str(e.value)


def test_bad_engine_options_and_serving_combinations_are_refused_by_the_config():
    for keywords, says in (({"option": ["fault.behaviour=explode"]}, "fault.behaviour takes one of"),
                           ({"options": {"fault": {"call_ms": "fast"}}}, "bad --option"),
                           ({"scenario": "server", "slo_p99": 50}, "needs an arrival rate"),
                           ({"scenario": "server", "qps": 10, "max_wait": 5}, "give --max-batch too"),
                           ({"scenario": "offline", "find_max_qps": True}, "is for the server scenario"),
                           ({"model": "minilm", "llm_config": "x.json"}, "not both")):
        with pytest.raises(UsageError, match=says):
            RunConfig.from_keywords(**keywords)


# -- one way results are stored ------------------------------------------------------------------------------------

def test_start_run_gives_a_plan_this_machines_speed_and_sees_each_cell(tmp_path, cpu_features):
    """The speed stored for this host under the CPU features in force (ENGINEBENCH_CPU_FEATURES makes another
    machine: a speed measured on the whole CPU gives an AVX2 run no GEMM ceilings)."""
    import socket
    from types import SimpleNamespace

    from enginebench.api import start_run
    from enginebench.store.database import ResultStore

    speed = {"measured_at": "2026-12-01T00:00:00+00:00", "bandwidth_gbs": 20.0, "gemm_gflops": 300.0}
    features = {"cpu_features": cpu_features.record()}  # as `enginebench machine` keeps it, masked or not
    with ResultStore(str(tmp_path / "m.db")) as store:
        store.add_machine_speed({**speed, "hostname": "elsewhere", "bandwidth_gbs": 1.0, "details": features})
        store.add_machine_speed({**speed, "hostname": socket.gethostname(), "details": features})
        plans = {kind: SimpleNamespace(model=SimpleNamespace(kind=kind), machine_speed=None)
                 for kind in ("decoder", "encoder")}
        for kind, plan in plans.items():
            launcher = SimpleNamespace(where="local", on_start=None)
            start_run(store, plan, launcher, "r", on_start=print)
            assert launcher.on_start is print
        remote = SimpleNamespace(model=SimpleNamespace(kind="decoder"), machine_speed=None)
        start_run(store, remote, SimpleNamespace(where="ray", on_start=None), "r")
    for plan in plans.values():  # this host's, not another's: the decoders' bandwidth, the encoders' ceilings
        assert {k: plan.machine_speed[k] for k in speed} == speed
        assert plan.machine_speed["gemm_gflops_by_precision"] == {"fp32": 300.0}
    assert remote.machine_speed is None  # a Ray node's is not known here
