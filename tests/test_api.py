"""The Python API: eb.run measures and stores, eb.load reads the same figures back, the stored command line
reproduces the options, and bad options fail before anything is measured."""

import pytest

import enginebench as eb
from enginebench.cli import build_parser
from enginebench.config import RunConfig


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("api") / "api.db")
    seen = []
    run = eb.run("minilm", engines=["torch"], workloads="titles", scenarios=["latency"], batch_size=[1, 2],
                 duration=0.2, min_samples=5, warmup="0.1s", repeat=2, seed=3, db=db,
                 on_result=lambda index, result: seen.append(index))
    return run, db, seen


@pytest.mark.engine
def test_run_measures_stores_and_loads_back(small_run):
    run, db, seen = small_run
    assert [(r.batch_size, r.status) for r in run.results] == [(1, "ok"), (2, "ok")]
    assert len(seen) == 4  # two cells, two repetitions each, reported as they arrive
    assert all(len(r.process_samples()) == 2 for r in run.results)
    loaded = eb.load(run.run_id, db=db)
    assert [r.latency_ms["median"] for r in loaded.results] == [r.latency_ms["median"] for r in run.results]
    assert eb.load(db=db).run_id == run.run_id  # the newest


@pytest.mark.engine
def test_stored_command_reproduces_the_options(small_run):
    run, _, _ = small_run
    command = eb.command_line(run)
    assert command.startswith("enginebench run ")
    config = RunConfig.from_cli(build_parser().parse_args(command.split()[1:]))
    assert config == RunConfig.from_dict(run.config["run_config"])  # the command gives the stored configuration
    assert config.engines == ["torch"] and config.workloads == ["titles"] and config.batch_sizes == [1, 2]
    assert (config.duration_s, config.repeat, config.seed, config.warmup_s) == (0.2, 2, 3, 0.1)


def test_bad_options_fail_before_measuring(tmp_path):
    db = tmp_path / "never.db"
    with pytest.raises(eb.UsageError, match="unknown option 'engnes'"):
        eb.run("minilm", engnes=["torch"], db=str(db))
    with pytest.raises(eb.UsageError, match="--batch-size"):
        eb.run("minilm", engines=["torch"], batch_size=[0], db=str(db))
    with pytest.raises(eb.UsageError, match="unknown engine"):
        eb.run("minilm", engines=["no-such-engine"], db=str(db))
    assert not db.exists()  # nothing measured, nothing stored
    with pytest.raises(eb.UsageError, match="no database"):
        eb.load(db=str(tmp_path / "missing.db"))


@pytest.mark.engine
def test_frame_compare_and_recommend_from_python(small_run):
    run, db, _ = small_run
    frame = eb.load(run.run_id, db=db).to_pandas()
    assert list(frame["batch_size"]) == [1, 2] and (frame["processes"] == 2).all()
    assert frame["median_ms"].tolist() == [r.latency_ms["median"] for r in run.results]
    same = eb.compare(run.run_id, run.run_id, db=db)
    assert [c.verdict for c in same.cells] == ["no significant change"] * 2 and not same.regressions()
    rec = eb.recommend(db=db, objective="latency", accept_warn=True)
    assert rec.best is not None and rec.best.engine == "torch" and rec.best.batch_size == 1
    assert rec.command.startswith("enginebench run ") and "--engine torch" in rec.command
    with pytest.raises(eb.UsageError, match="unknown constraints"):
        eb.recommend(db=db, objectve="latency")
