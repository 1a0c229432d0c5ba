"""Sweep files: every mistake named with its line before anything runs, and the matrix they expand to."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from enginebench.errors import UsageError
from enginebench.execution.local import LocalLauncher
from enginebench.sweep.spec import load_sweep, sweep_id_of
from enginebench.sweep.toml_lines import key_lines
from helpers.fake_engines import FAULT_PLUGINS, FaultEngine, FaultOptions

BASE = """\
engine = "fault"
workload = "titles"
scenario = "latency"
batch_size = [1, 2]
duration = "0.2s"
"""


@pytest.fixture(autouse=True)
def _fault_engine(monkeypatch):
    monkeypatch.setenv("ENGINEBENCH_ENGINES", FAULT_PLUGINS)


def _file(tmp_path, text: str, name: str = "s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(path) -> str:
    with pytest.raises(UsageError) as e:
        load_sweep(str(path), pin_cpus=False)
    return str(e.value)


def test_an_unknown_key_names_its_line_and_the_close_name(tmp_path):
    msg = _error(_file(tmp_path, BASE + "bach_size = [4]\n"))
    assert "line 6" in msg and "'bach_size'" in msg and "did you mean 'batch_size'" in msg
    msg = _error(_file(tmp_path, BASE + '[[model]]\nname = "minilm"\n\n[[model]]\nname = "minilm"\nwarmpu = "1s"\n'))
    assert "line 11" in msg and "did you mean 'warmup'" in msg
    msg = _error(_file(tmp_path, BASE + '[[model]]\nname = "minilm"\ncpus = "0"\n'))
    assert "line 8" in msg and "put it at the top" in msg


def test_bad_values_name_the_key_and_line(tmp_path):
    msg = _error(_file(tmp_path, BASE + "repeat = true\n"))
    assert "line 6" in msg and "repeat" in msg
    msg = _error(_file(tmp_path, BASE + '[[model]]\nname = "minilm"\nwarmup = "soon"\n'))
    assert "line 8" in msg and "--warmup 'soon' is not a duration" in msg
    msg = _error(_file(tmp_path, BASE.replace('"fault"', '["fault", "nosuch"]')))
    assert "line 1" in msg and "unknown engine 'nosuch'" in msg
    msg = _error(_file(tmp_path, BASE + '[[model]]\nname = "no-such-model"\n'))
    assert "line 7" in msg and "unknown model" in msg
    msg = _error(_file(tmp_path, BASE + '\n[options.fault]\nbehaviour = ["ok", "explode"]\n'))
    assert "line 8" in msg and "fault.behaviour takes one of" in msg and "'explode'" in msg
    msg = _error(_file(tmp_path, BASE + "batch_size = 3\n"))
    assert "not valid TOML" in msg and "line 6" in msg


def test_option_lists_expand_into_one_part_per_value_with_unique_cell_keys(tmp_path):
    text = BASE.replace('"fault"', '["fault", "torch"]') + textwrap.dedent("""
        [options.fault]
        behaviour = ["ok", "hog"]
        call_ms = [1, 2]

        [[model]]
        name = "minilm"
        [[model]]
        name = "minilm"
        batch_size = [8]
        """)
    sweep = load_sweep(str(_file(tmp_path, text)), pin_cpus=False)
    labels = [p.label for p in sweep.parts]
    assert labels[0] == "minilm" and "minilm fault behaviour=hog call_ms=2" in labels
    assert len(sweep.parts) == 2 * (1 + 4)  # per model: torch alone, then fault once per (behaviour, call_ms)
    plain = sweep.parts[0]
    assert {c.engine for c in plain.plan.cells} == {"torch"} and "--engine" in plain.argv
    assert plain.argv[plain.argv.index("--engine") + 1] == "torch"
    variant = sweep.parts[1]
    assert {c.engine for c in variant.plan.cells} == {"fault"} and variant.plan.engine_options == {
        "fault": {"behaviour": "ok", "call_ms": "1"}}
    assert [c.batch_size for c in sweep.parts[5].plan.cells] == [8]  # the second model's override
    keys = [p.cell_key(sweep.sweep_id, c) for p in sweep.parts for c in p.plan.cells]
    assert len(keys) == len(set(keys)) == (2 + 4 * 2) + (1 + 4 * 1)


def test_the_sweep_id_follows_the_content_and_the_machine_not_the_layout(tmp_path):
    a = load_sweep(str(_file(tmp_path, BASE)), pin_cpus=False)
    b = load_sweep(str(_file(tmp_path, "# the same sweep\n" + BASE.replace(" = ", "=") + "\n")), pin_cpus=False)
    c = load_sweep(str(_file(tmp_path, BASE.replace("0.2s", "0.3s"))), pin_cpus=False)
    assert a.sweep_id == b.sweep_id != c.sweep_id
    assert sweep_id_of(tmp_path / "s.toml", a.spec, "host-a") != sweep_id_of(tmp_path / "s.toml", a.spec, "host-b")
    retried = load_sweep(str(_file(tmp_path, BASE)), retries="2", pin_cpus=False)  # how failures are handled ...
    assert retried.parts[0].key == a.parts[0].key and retried.parts[0].plan.retries == 2  # ... is no new cell


def test_the_sweep_id_follows_the_work_its_cells_do_not_only_the_files_text(tmp_path, monkeypatch):
    """The same file is another sweep once its corpus's text or an engine option's value changed (the cells'
    identities, store/identity.py), so a resume never adds new work to results of the old."""
    corpus = tmp_path / "docs.txt"
    corpus.write_text("The first document, long enough to be kept.\nAnd a second one, long enough too.\n")
    text = BASE.replace('workload = "titles"', f'workload = "corpus"\ncorpus = "{corpus}"')
    first = load_sweep(str(_file(tmp_path, text)), pin_cpus=False)
    again = load_sweep(str(_file(tmp_path, text)), pin_cpus=False)
    assert first.sweep_id == again.sweep_id
    identities = [LocalLauncher(first.parts[0].plan).identity(c) for c in first.parts[0].plan.cells]
    assert {i.corpus_digest for i in identities} == {first.parts[0].plan.workloads["corpus"].spec.digest}
    corpus.write_text("Another text altogether, long enough to be kept.\nAnd its second line, long enough.\n")
    edited = load_sweep(str(_file(tmp_path, text)), pin_cpus=False)
    assert edited.spec == first.spec and edited.sweep_id != first.sweep_id
    assert [p.key for p in edited.parts] == [p.key for p in first.parts]  # the same parts: only the work differs
    # an engine option's value the file does not give (its default, changed by an upgrade) is the work too

    @dataclasses.dataclass(frozen=True)
    class SlowerByDefault(FaultOptions):
        call_ms: float = 7.0

    monkeypatch.setattr(FaultEngine, "Options", SlowerByDefault)
    assert load_sweep(str(_file(tmp_path, text)), pin_cpus=False).sweep_id != edited.sweep_id


def test_key_lines_follow_tables_arrays_of_tables_and_multiline_values():
    lines = key_lines(textwrap.dedent('''\
        engine = ["a",
          "b"]
        note = """
        fake = 1
        """
        [options.onnxruntime]
        graph_optimization = ["basic"]
        [[model]]
        name = "x"
        [model.options.torch]
        threads = 1
        [[model]]
        name = "y"
        '''))
    assert lines[("engine",)] == 1 and ("fake",) not in lines
    assert lines[("options", "onnxruntime", "graph_optimization")] == 7
    assert lines[("model", 0, "name")] == 9 and lines[("model", 0, "options", "torch", "threads")] == 11
    assert lines[("model", 1, "name")] == 13


def test_an_earlier_sweep_of_the_same_file_is_named_until_this_one_starts(tmp_path):
    """A stored sweep of the same file under another id (an earlier enginebench's, nothing stored that differs)
    is named with what it is; once this sweep has started, resuming it says nothing of the other."""
    from enginebench.store.database import ResultStore
    from enginebench.sweep.runner import earlier_sweep_note

    sweep = load_sweep(str(_file(tmp_path, BASE)), pin_cpus=False)
    owner = {"host": "elsewhere", "pid": 1, "since": "2026-12-01T00:00:00+00:00"}
    with ResultStore(tmp_path / "s.db") as store:
        assert earlier_sweep_note(sweep, store) is None
        store.claim_sweep("s-0123456789", sweep.file, sweep.spec, owner, lambda holder: True)
        note = earlier_sweep_note(sweep, store)
        assert note.startswith("this file was swept before as sweep s-0123456789 (2026-12-01T00:00:00+00:00)")
        assert "an earlier enginebench made" in note and f"this is sweep {sweep.sweep_id}, measured anew" in note
        store.claim_sweep(sweep.sweep_id, sweep.file, sweep.spec, owner, lambda holder: True)
        assert earlier_sweep_note(sweep, store) is None
